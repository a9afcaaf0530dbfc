"""``convert(src, dst)``: ``.onnx`` -> ``.lnn`` or ``.lnn`` -> ``.onnx``, by the extensions,
with the figures ``lepton-nn convert`` prints: the ops found, the parity against the source
on a random sample (max abs difference; ONNX Runtime runs the ONNX side when installed) and
the sizes of both files."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from lepton_nn.errors import LeptonError

__all__ = ["convert", "format_report"]


def _ext(path: Any) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def _sample(model, n: int, seed: int) -> Any:
    """A random batch for ``model`` (an InferenceModel): ids for an input an Embedding reads
    (int64 inputs), floats otherwise; a dict by name for a network of several inputs."""
    rng = np.random.default_rng(seed)
    arch = model.manifest["model"]["architecture"]
    cfg = arch.get("config", {})
    if arch.get("class") == "Model":
        specs = [(s["name"], s["shape"][1:], s.get("dtype")) for s in cfg["inputs"]]
    else:
        first = (cfg.get("layers") or [{}])[0]
        ids = first.get("class") == "Embedding"
        specs = [("input", list(model.input_shape[1:]), "int64" if ids else "float32")]
    vocab = min((c["config"]["input_dim"] for c in cfg.get("layers", [])
                 if c.get("class") == "Embedding"), default=2)  # fmt: skip
    out = {
        name: rng.integers(0, vocab, (n, *shape)) if dtype == "int64"
        else rng.standard_normal((n, *shape)).astype(np.float32)
        for name, shape, dtype in specs
    }  # fmt: skip
    return out if len(out) > 1 else next(iter(out.values()))


def _onnx_run(path: Any, x: Any) -> tuple[list | None, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "not checked (pip install onnxruntime to check it)"
    import onnx

    quantized = any(n.op_type in _INT8_OPS for n in onnx.load(os.fspath(path)).graph.node)
    options = ort.SessionOptions()
    if quantized:  # the ONNX semantics: ORT's fused x64 int8 kernels may saturate (docs)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    xs = list(x.values()) if isinstance(x, dict) else [x]
    feeds = {
        i.name: v.astype(np.int64) if "int" in i.type else v.astype(np.float32)
        for i, v in zip(session.get_inputs(), xs)
    }  # fmt: skip
    return session.run(None, feeds), "ONNX Runtime" + (", graph optimizations off" * quantized)


_INT8_OPS = ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul")


def convert(src: Any, dst: Any, *, opset: int | None = None, sample: int = 16,
            seed: int = 0) -> dict:  # fmt: skip
    """Convert ``src`` to ``dst`` and return ``{"direction", "ops", "parity", "oracle",
    "sizes"}`` (parity: max |lepton_nn - ONNX Runtime| on ``sample`` random rows, or None)."""
    from lepton_nn import runtime

    a, b = _ext(src), _ext(dst)
    if (a, b) == (".onnx", ".lnn"):
        from lepton_nn.runtime.format import write_lnn

        from .importer import onnx_to_manifest

        manifest, arrays, report = onnx_to_manifest(src)
        manifest["metadata"] = {"converted_from": os.path.basename(os.fspath(src))}
        model = runtime.from_manifest(manifest, arrays)  # validated and planned first
        write_lnn(dst, {**manifest, "created_by": "lepton_nn onnx import"}, arrays)
        ops = report["ops"]
        onnx_path = src
    elif (a, b) == (".lnn", ".onnx"):
        from .exporter import export

        model = runtime.load(src)
        proto = export(src, dst, opset=opset)
        ops = dict(Counter(n.op_type for n in proto.graph.node))
        onnx_path = dst
    else:
        raise LeptonError(
            f"convert: give an .onnx and an .lnn path (one each way), got {a or 'none'!r} -> "
            f"{b or 'none'!r}"
        )
    if model.kind == "tabular":
        parity, oracle = _tabular_parity(model, onnx_path, sample, seed)
    else:
        x = _sample(model, sample, seed)
        ref, oracle = _onnx_run(onnx_path, x)
        parity = None
        if ref is not None:
            got = model.predict(x)
            got = got if isinstance(got, list) else [got]
            parity = max(float(np.max(np.abs(g - r))) for g, r in zip(got, ref))
    sizes = {"in": os.path.getsize(src), "out": os.path.getsize(dst)}
    return {"direction": f"{a} -> {b}", "ops": ops, "parity": parity, "oracle": oracle,
            "sizes": sizes}  # fmt: skip


def _tabular_parity(model, onnx_path: Any, n: int, seed: int) -> tuple[float | None, str]:
    """Max |difference| of the probabilities (or values) on ``n`` made-up raw rows (numbers
    around each column's center, categories drawn from the learnt ones, some missing);
    a label that differs counts as a difference of 1."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "not checked (pip install onnxruntime to check it)"
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {}
    feeds = {}
    for spec in model.preprocessing.columns:
        name, missing = spec["name"], rng.random(n) < 0.1
        if spec["kind"] == "numeric":
            v = spec["center"] + spec["scale"] * rng.standard_normal(n)
            v[missing] = np.nan
            cols[name], feeds[name] = list(v), v[:, None]
        else:
            v = rng.choice(np.array(spec["categories"], dtype=object), n)
            v[missing] = ""
            cols[name], feeds[name] = list(v), v.astype(object)[:, None]
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    for name, v in feeds.items():  # numbers as the file declares them (float or double)
        if types.get(name) in ("tensor(float)", "tensor(double)"):
            feeds[name] = v.astype(np.float32 if types[name] == "tensor(float)" else np.float64)
    got = session.run(None, feeds)
    if model.task == "regression":
        return float(np.max(np.abs(got[0] - model.predict(cols)))), "ONNX Runtime"
    same = np.array_equal(got[0], model.predict(cols))
    diff = float(np.max(np.abs(got[1] - model.predict_proba(cols))))
    return (diff if same else 1.0), "ONNX Runtime (probabilities; labels equal)" if same else \
        "ONNX Runtime (labels differ)"  # fmt: skip


def format_report(src: Any, dst: Any, r: dict) -> str:
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(r["ops"].items()))
    parity = (
        f"max |difference| {r['parity']:.3g} on a random sample (lepton_nn runtime vs "
        f"{r['oracle']})" if r["parity"] is not None else r["oracle"]
    )  # fmt: skip
    return "\n".join([
        f"converted {src} -> {dst}",
        f"  ops: {ops}",
        f"  parity: {parity}",
        f"  sizes: {r['sizes']['in']:,} bytes -> {r['sizes']['out']:,} bytes",
    ])  # fmt: skip
