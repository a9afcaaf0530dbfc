"""W7 cold start: what a fresh process runs to import an engine, load a saved W2 model and
predict one row, and how much disk each engine takes.

A worker builds its engine's script (:func:`coldstart_script`, which also saves the model
file); :func:`lepton_nn.bench.runner.run` times the scripts in fresh interpreters,
interleaved, after the workers have exited.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import numpy as np

from .engines.lepton import lepton_mlp
from .engines.onnx_runtime import onnx_mlp_bytes
from .engines.pytorch import torch_mlp
from .engines.tensorflow_keras import keras_mlp
from .workloads import W2, glorot_weights

_COLD_PRELUDE = "import time\n_t0 = time.perf_counter()\n"
_COLD_EPILOGUE = (
    "import json\n"
    "assert tuple(out.shape) == (1, {n_out}), out.shape\n"
    "print(json.dumps({{'seconds': time.perf_counter() - _t0, 'path': PATH_KIND}}))\n"
)


def coldstart_script(engine: str, directory: str) -> tuple[str, str]:
    """Save the W2 model for ``engine`` under ``directory``; return (script, how).

    The script, run in a fresh interpreter, imports the engine, loads the file, predicts one
    row, and prints ``{"seconds": in-process time}`` (the caller also times the process).
    """
    spec = W2
    weights = glorot_weights(spec.sizes)
    x_expr = f"np.full((1, {spec.sizes[0]}), 0.5, np.float32)"
    if engine.startswith("lepton"):
        from lepton_nn import io
        from lepton_nn.autograd import no_grad

        model = lepton_mlp(spec.sizes, weights)
        with no_grad():
            model(np.zeros((1, spec.sizes[0]), np.float32))
        path = os.path.join(directory, "w2.lnn")
        io.save(model, path)
        body = (
            "import numpy as np\n"
            "try:\n"
            "    from lepton_nn.runtime import load\n"
            "    PATH_KIND = 'lepton_nn.runtime'\n"
            "except ImportError:\n"
            "    load = None\n"
            "if load is not None:\n"
            f"    m = load({path!r})\n"
            f"    out = np.asarray((getattr(m, 'predict', None) or m)({x_expr}))\n"
            "else:\n"
            "    from lepton_nn import io, no_grad\n"
            "    PATH_KIND = 'lepton_nn.io.load + model(x)'\n"
            f"    m = io.load({path!r})\n"
            "    with no_grad():\n"
            f"        out = m({x_expr}).data\n"
        )
        how = (
            "`lepton_nn.runtime.load(path).predict(x)` when the runtime offers `load`, else "
            "`lepton_nn.io.load(path)` + `model(x)` under `no_grad()`; `.lnn` file"
        )
    elif engine == "numpy":
        path = os.path.join(directory, "w2.npz")
        np.savez(path, *[a for wb in weights for a in wb])
        body = (
            "import numpy as np\n"
            "PATH_KIND = 'numpy'\n"
            f"f = np.load({path!r})\n"
            "ps = [f[k] for k in f.files]\n"
            f"h = {x_expr}\n"
            "for k in range(0, len(ps), 2):\n"
            "    h = h @ ps[k] + ps[k + 1]\n"
            "    if k + 2 < len(ps):\n"
            "        h = np.maximum(h, 0)\n"
            "out = h\n"
        )
        how = "`np.load` of an `.npz` of the weights, forward in plain NumPy"
    elif engine == "torch":
        import torch

        path = os.path.join(directory, "w2.pt")
        torch.save(torch_mlp(spec.sizes, weights).state_dict(), path)
        sizes = list(spec.sizes)
        body = (
            "import numpy as np\n"
            "import torch\n"
            "from torch import nn\n"
            "PATH_KIND = 'torch'\n"
            f"s = {sizes!r}\n"
            "layers = []\n"
            "for k in range(len(s) - 1):\n"
            "    layers.append(nn.Linear(s[k], s[k + 1]))\n"
            "    if k < len(s) - 2:\n"
            "        layers.append(nn.ReLU())\n"
            "m = nn.Sequential(*layers)\n"
            f"m.load_state_dict(torch.load({path!r}, weights_only=True))\n"
            "m.eval()\n"
            "with torch.inference_mode():\n"
            f"    out = m(torch.from_numpy({x_expr})).numpy()\n"
        )
        how = "rebuild `nn.Sequential`, `load_state_dict(torch.load(path, weights_only=True))`"
    elif engine == "tensorflow":
        path = os.path.join(directory, "w2.keras")
        keras_mlp(spec.sizes, weights).save(path)
        body = (
            "import os\n"
            "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"
            "import numpy as np\n"
            "import keras\n"
            "PATH_KIND = 'keras'\n"
            f"m = keras.models.load_model({path!r})\n"
            f"out = np.asarray(m({x_expr}, training=False))\n"
        )
        how = "`keras.models.load_model(path.keras)` then `model(x)`"
    elif engine == "onnxruntime":
        path = os.path.join(directory, "w2.onnx")
        with open(path, "wb") as fh:
            fh.write(onnx_mlp_bytes(weights))
        body = (
            "import numpy as np\n"
            "import onnxruntime as ort\n"
            "PATH_KIND = 'onnxruntime'\n"
            f"s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
            f"out = s.run(None, {{'x': {x_expr}}})[0]\n"
        )
        how = "`onnxruntime.InferenceSession(path.onnx)` then `run`"
    else:
        raise ValueError(f"no cold-start script for {engine}")
    script = _COLD_PRELUDE + body + _COLD_EPILOGUE.format(n_out=spec.sizes[-1])
    return script, how


_SIZE_PACKAGES = {
    "lepton": ["lepton_nn"],
    "numpy": ["numpy"],
    "torch": ["torch"],
    "tensorflow": ["tensorflow", "keras"],
    "onnxruntime": ["onnxruntime"],
}


def installed_mb(engine: str) -> float | None:
    """Megabytes on disk of the engine's own package directories (None if not found)."""
    pkgs = _SIZE_PACKAGES.get(engine.partition(":")[0])
    if not pkgs:
        return None
    total = 0
    for name in pkgs:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for d in (spec.submodule_search_locations or []) if spec else []:
            for root, _dirs, files in os.walk(d):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.path.getsize(os.path.join(root, f))
    return total / 1e6 if total else None
