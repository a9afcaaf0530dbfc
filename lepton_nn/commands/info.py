"""``lepton-nn info [MODEL] [--json]``: this install (versions, compiled kernels, backends,
the int8 instruction path, threads), or a model file's manifest summarized."""

from __future__ import annotations

import importlib
import json
import platform
from typing import Any

import numpy as np

from .. import __version__

_NO_NUMBA = 'not installed (pip install "lepton-nn[fast]")'
# every module setup.py builds: kernels/<name>.pyx -> _<name>, and kernels/hostprobe.c
_EXTENSIONS = ("conv", "dense", "gemm", "pool", "qgemm", "recurrent", "sparse", "hostprobe")


def environment() -> dict[str, Any]:
    """Everything the default ``info`` prints, as plain data."""
    from .. import backend
    from ..backend.threads import blas_threads_controlled, get_num_threads
    from ..kernels import cpu_features

    compiled = {}
    for name in _EXTENSIONS:
        try:
            importlib.import_module(f"lepton_nn.kernels._{name}")
            compiled[name] = True
        except ImportError:
            compiled[name] = False
    int8 = None
    if compiled["qgemm"]:
        q = importlib.import_module("lepton_nn.kernels._qgemm")
        int8 = {"active": q.isa(), "usable": list(q.supported_isas())}
    try:
        numba = importlib.import_module("numba").__version__
    except ImportError:
        numba = None
    return {
        "lepton_nn": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.machine()} ({platform.system()})",
        "numpy": np.__version__,
        "numba": numba,
        "compiled_kernels": compiled,
        "cpu_features": list(cpu_features()),
        "int8_isa": int8,
        "backends_available": list(backend.available()),
        "active_backend": backend.get_backend().name,
        "threads": get_num_threads(),
        "blas_threads_controlled": bool(blas_threads_controlled()),
        "kernels": dict(backend.info()),
    }


def _env_text(e: dict) -> list[str]:
    built = [n for n, ok in e["compiled_kernels"].items() if ok]
    missing = [n for n, ok in e["compiled_kernels"].items() if not ok]
    ext = f"{len(built)} of {len(built) + len(missing)} built" + (
        f" (missing: {', '.join(missing)})" if missing else ""
    )
    if e["int8_isa"]:
        i8 = e["int8_isa"]
        isa = f"{i8['active']} (usable here: {', '.join(i8['usable'])}; LEPTON_ISA forces lower)"
    else:
        isa = "NumPy reference (compiled int8 kernel not built)"
    control = "held to 1 inside parallel ops" if e["blas_threads_controlled"] else "not controlled"
    lines = [
        f"lepton_nn {e['lepton_nn']}",
        f"python {e['python']} on {e['platform']}",
        f"numpy {e['numpy']}",
        f"numba {e['numba'] or _NO_NUMBA}",
        f"compiled kernels (Cython/C): {ext}",
        f"cpu features: {' '.join(e['cpu_features']) or 'unknown'}",
        f"int8 matmul path: {isa}",
        f"backends available: {', '.join(e['backends_available'])}",
        f"active backend: {e['active_backend']} (LEPTON_BACKEND forces one)",
        f"threads: {e['threads']} (set_num_threads / LEPTON_NUM_THREADS); BLAS {control}",
        "kernels:",
    ]
    lines += [f"  {k:<28} {v}" for k, v in e["kernels"].items()]
    return lines


def model_summary(path: str) -> dict[str, Any]:
    """The manifest without its array table, plus the number of arrays."""
    from ..runtime.format import inspect_lnn

    manifest = inspect_lnn(path)
    out = {k: v for k, v in manifest.items() if k != "arrays"}
    out["n_arrays"] = len(manifest.get("arrays", {}))
    out["runtime_plan"] = plan_memory(path)
    return out


def plan_memory(path: str) -> dict[str, Any]:
    """The runtime plan's steps and activation memory at batch 1 and 64 (buffers reused after
    their last reader), or why the runtime cannot serve the file."""
    from ..errors import LeptonError
    from ..runtime import load

    try:
        served = load(path)
    except LeptonError as exc:
        return {"error": str(exc)}
    return {f"batch_{n}": served.plan_info(n) for n in (1, 64)}


def _model_text(path: str, m: dict) -> list[str]:
    lines = [f"{path}: lepton_nn model file (format {m.get('format_version', '?')})"]
    for key in ("kind", "task", "classes", "positive", "threshold", "seed"):
        if key in m:
            lines.append(f"  {key:<12} {json.dumps(m[key])}")
    for key, v in m.items():
        if key in (
            "kind",
            "task",
            "classes",
            "positive",
            "threshold",
            "seed",
            "n_arrays",
            "runtime_plan",
        ) or key in (
            "format",
            "format_version",
        ):
            continue
        if isinstance(v, (dict, list)):
            text = json.dumps(v)
            short = text if len(text) <= 80 else text[:77] + "..."
            lines.append(f"  {key:<12} {short}")
        else:
            lines.append(f"  {key:<12} {json.dumps(v)}")
    lines.append(f"  arrays       {m['n_arrays']}")
    plan = m["runtime_plan"]
    if "error" in plan:
        lines.append(f"runtime plan: none ({plan['error']})")
    for key, p in plan.items():
        if key.startswith("batch_"):
            lines.append(
                f"runtime plan, batch {key[6:]}: {p['steps']} steps, activation memory "
                f"{p['peak_bytes']:,} bytes in {p['buffers']} buffers "
                f"({p['requested_bytes']:,} without reuse); weights {p['weight_bytes']:,} bytes"
            )
    lines.append("  (the whole manifest: lepton-nn info MODEL --json)")
    return lines


def model_card(path: str) -> str:
    """The Markdown model card stored in ``path`` (:mod:`lepton_nn.risk.card`)."""
    from ..errors import LeptonError
    from ..risk import card
    from ..runtime.format import inspect_lnn

    manifest = inspect_lnn(path)
    stored = manifest.get("card")
    if isinstance(manifest.get("privacy"), dict):  # a private fit saved without write_card
        from types import SimpleNamespace

        from ..risk.model_card import privacy_section

        holder = SimpleNamespace(card=card.check(stored) if stored is not None else None)
        if holder.card is None or "Privacy" not in holder.card["sections"]:
            stored = privacy_section(holder, manifest["privacy"]).card
    if stored is None:
        raise LeptonError(
            f"{path} has no model card; write one with lepton_nn.risk.card.set_section() "
            "(lepton_nn.risk.card.set_section), then save"
        )
    return card.to_markdown(stored, title=f"Model card: {path}")


def cmd_info(args) -> int:
    if getattr(args, "card", False):
        if not args.model:
            from ..errors import LeptonError

            raise LeptonError("info --card needs a MODEL file")
        print(model_card(args.model), end="")
        return 0
    if args.model:
        data = model_summary(args.model)
        text = _model_text(args.model, data)
    else:
        data = environment()
        text = _env_text(data)
    print(json.dumps(data, indent=2) if args.json else "\n".join(text))
    return 0


def add_parser(sub, h) -> None:
    i = sub.add_parser(
        "info",
        help="versions, compiled kernels, backends, int8 path; or a model file's manifest",
        formatter_class=h,
    )
    i.add_argument("model", nargs="?", help="a .lnn file (omit: describe this install)")
    i.add_argument("--json", action="store_true", help="print valid JSON instead of text")
    i.add_argument("--card", action="store_true", help="print the model card (Markdown)")
    i.set_defaults(fn=cmd_info)
