"""Light imports: what ``import lepton_nn`` (and its floors) may and may not load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import PKG_PARENT

import lepton_nn

ROOT = PKG_PARENT  # where the imported lepton_nn lives


def loaded_after(code: str) -> set[str]:
    """The module names in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LEPTON_BACKEND", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_lepton_nn_is_light():
    mods = loaded_after("import lepton_nn")
    assert "lepton_nn" in mods
    heavy = {"numba", "torch", "tensorflow", "scipy", "llvmlite"}
    assert not heavy & {m.split(".")[0] for m in mods}
    assert not any(
        m.startswith(("lepton_nn.autograd", "lepton_nn.nn", "lepton_nn.ops")) for m in mods
    )
    assert "lepton_nn.optim" not in mods


def test_backend_does_not_import_autograd_or_numba():
    mods = loaded_after("import lepton_nn.backend as b\nb.available()\nb.kernel_names()")
    assert "lepton_nn.backend" in mods
    assert not any(
        m.startswith(("lepton_nn.autograd", "lepton_nn.ops", "lepton_nn.nn")) for m in mods
    )
    assert "numba" not in mods


def test_using_tensors_does_not_import_numba():
    mods = loaded_after(
        "import lepton_nn as ln\nx = ln.Tensor([1.0, 2.0], requires_grad=True)\n"
        "(x * x).sum().backward()"
    )
    assert "lepton_nn.autograd" in mods
    assert "numba" not in mods


def test_lazy_attributes():
    assert lepton_nn.Tensor is __import__("lepton_nn.ops", fromlist=["Tensor"]).Tensor
    from lepton_nn import autograd, errors, random

    assert lepton_nn.Function is autograd.Function
    assert lepton_nn.no_grad is autograd.no_grad
    assert lepton_nn.gradcheck is autograd.gradcheck
    assert lepton_nn.set_seed is random.set_seed
    for name in ["LeptonError", "ShapeError", "DataError", "ModelFormatError", "GradcheckError"]:
        assert getattr(lepton_nn, name) is getattr(errors, name)
    assert issubclass(lepton_nn.ShapeError, lepton_nn.LeptonError)
    assert issubclass(lepton_nn.NotBuiltError, lepton_nn.LeptonError)
    assert lepton_nn.nn.Dense.__name__ == "Dense"
    assert callable(lepton_nn.losses.mse)
    assert callable(lepton_nn.optim.Adam)
    assert "reference" in lepton_nn.backend.available()
    for fn in ("concat", "stack", "where", "maximum"):
        assert callable(getattr(lepton_nn, fn))
    assert isinstance(lepton_nn.__version__, str)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        lepton_nn.no_such_thing  # noqa: B018
    assert not hasattr(lepton_nn, "_private")


def test_dir_lists_the_public_names():
    names = dir(lepton_nn)
    assert names == sorted(names)
    for name in [
        "Tensor",
        "Function",
        "no_grad",
        "gradcheck",
        "concat",
        "stack",
        "where",
        "set_seed",
        "nn",
        "losses",
        "optim",
        "backend",
        "LeptonError",
        "ShapeError",
        "GradcheckError",
        "__version__",
    ]:
        assert name in names
    assert set(lepton_nn.__all__) <= set(names)


def test_compress_and_inspect_callbacks_do_not_import_the_trainer():
    mods = loaded_after(
        "import lepton_nn.compress as c, lepton_nn.inspect as i\n"
        "assert c.PruningCallback is c.PruningSchedule and i.Recorder is i.RecorderHooks\n"
        "c.PruningCallback(c.OneShot(0.5)), i.Recorder()"
    )
    assert "lepton_nn.compress.pruning" in mods and "lepton_nn.inspect.recorder" in mods
    assert not any(m.startswith("lepton_nn.train") for m in mods)


def _module_imports(path, name: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The lepton_nn modules a module imports at its top level (``if TYPE_CHECKING:`` blocks
    included: an annotation-only import still ties the two files together), without the
    packages it sits in."""
    import ast

    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    stack = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.If, ast.Try)):
            stack += node.body + node.orelse + getattr(node, "finalbody", [])
            stack += [s for h in getattr(node, "handlers", []) for s in h.body]
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(parent + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in known else mod)
    return {m for m in found & known if m != name and not name.startswith(m + ".")}


def import_cycles(prefix: str = "lepton_nn") -> list[list[str]]:
    """Groups of modules under ``prefix`` that import each other, directly or round about."""
    root = ROOT / "lepton_nn"
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    graph = {n: _module_imports(f, n, p, set(mods)) for n, (f, p) in mods.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for m in graph[todo.pop()] - seen:
                seen.add(m)
                todo.append(m)
        return seen

    reached = {n: reach(n) for n in graph if n.startswith(prefix)}
    groups = {
        frozenset({n} | {m for m in r if n in reached.get(m, ())})
        for n, r in reached.items()
        if n in r
    }
    return sorted(sorted(g) for g in groups)


def test_no_import_cycles():
    """No module imports one that imports it back (e.g. callbacks need not know the trainer)."""
    assert import_cycles() == []
