"""The options of ``lepton-nn bench``: which peers, backends, thread counts and workloads,
parsed from the command line, and the quick and full timing settings."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "ACC")
W6_SIZES = ("W6m1", "W6m64", "W6m256", "W6m1024")
_W8_NETS = {"cnn": "the W3 CNN", "lstm": "the W4 LSTM", "gru": "a GRU of the W4 LSTM's size"}
W8_CASES = tuple(f"W8{net}{b}" for net in _W8_NETS for b in (1, 64))  # vs ONNX Runtime
_ALIASES = {
    "tf": "tensorflow",
    "keras": "tensorflow",
    "pytorch": "torch",
    "ort": "onnxruntime",
    "onnx": "onnxruntime",
}
WORKLOAD_TITLES = {
    "W1": "W1 tabular MLP training (32-64-32-1, batch 64, Adam, BCE)",
    "W2": "W2 MNIST-sized MLP training (784-512-256-10, batch 128, Adam, cross-entropy)",
    "W5b1": "W5 inference of the W2 model, batch 1 (latency)",
    "W5b64": "W5 inference of the W2 model, batch 64",
    "W5b256": "W5 inference of the W2 model, batch 256 (throughput)",
    "W3": "W3 small CNN training (1x28x28, Conv 16 -> pool -> Conv 32 -> pool -> Dense 10, "
    "batch 64, Adam, cross-entropy)",
    "W4": "W4 LSTM training (50 steps x 8 features, 64 units, Dense 10, batch 32, Adam, "
    "cross-entropy)",
    **{w: f"W6 matrix multiply ({w[3:]}, 1024) x (1024, 1024)" for w in W6_SIZES},
    **{
        f"W8{net}{b}": f"W8 inference of {what}, batch {b}" + (" (latency)" if b == 1 else "")
        for net, what in _W8_NETS.items()
        for b in (1, 64)
    },
}


QUICK = {
    "rounds": 3,
    "round_seconds": 0.1,
    "coldstart_repeats": 2,
    "gap_threaded": 0.1,
    "reruns": 0,
    "peak_repeats": 5,
}
FULL = {
    "rounds": 7,
    "round_seconds": 0.4,
    "coldstart_repeats": 5,
    "gap_threaded": 0.2,
    "reruns": 1,
    "peak_repeats": 15,
}


@dataclass
class Options:
    """What one ``lepton-nn bench`` run does (:meth:`from_args` reads the command line)."""

    against: list[str] = field(default_factory=list)  # peers (installed ones are run)
    backends: list[str] = field(default_factory=list)  # lepton_nn backends
    threads: list[int] = field(default_factory=list)
    workloads: list[str] = field(default_factory=lambda: list(ALL_WORKLOADS))
    out: str = "bench-results"
    quick: bool = False
    rounds: int = 7
    round_seconds: float = 0.4
    coldstart_repeats: int = 5
    gap_seconds: float = 0.01  # idle between two rounds (one thread per engine)
    # with several threads, idle long enough for the last engine's pool threads to stop
    # spinning (OpenBLAS spins ~0.1 s after a GEMM), or they steal a core from the next round
    gap_threaded: float = 0.2
    # a workload whose rounds ran with the 1-minute load average above ``max_load`` is run
    # again, up to ``reruns`` times; the run with the lowest load is kept (the report says so)
    max_load: float = 1.0
    reruns: int = 1
    peak_repeats: int = 15  # sgemm samples for the GEMM peak, before and after the workloads
    # ``--python ENGINE=PATH``: the interpreter an engine's worker runs in (its own venv)
    python: dict[str, str] = field(default_factory=dict)
    command: str = ""

    @classmethod
    def from_args(cls, args) -> Options:
        quick = bool(getattr(args, "quick", False))
        cores = os.cpu_count() or 1
        o = cls(quick=quick)
        o.against = _peers(getattr(args, "against", None))
        o.backends = _backends(getattr(args, "backends", None))
        threads = getattr(args, "threads", None)
        if threads:
            o.threads = _int_list(threads, "--threads")
        else:
            o.threads = [cores] if quick or cores == 1 else [cores, 1]
        wl = getattr(args, "workloads", None)
        if wl:
            o.workloads = _workloads(wl)
        o.out = getattr(args, "out", None) or o.out
        for k, v in (QUICK if quick else FULL).items():
            setattr(o, k, v)
        o.python = _pythons(getattr(args, "python", None))
        max_load = getattr(args, "max_load", None)
        if max_load is not None:
            o.max_load = float(max_load)
        o.command = " ".join(
            [
                "lepton-nn bench",
                f"--against {','.join(o.against) or 'none'}",
                f"--backends {','.join(o.backends)}",
                f"--threads {','.join(map(str, o.threads))}",
                f"--workloads {','.join(o.workloads)}",
                f"--out {shlex.quote(o.out)}",
                *(f"--python {e}={shlex.quote(p)}" for e, p in o.python.items()),
                *([f"--max-load {o.max_load:g}"] if max_load is not None else []),
                *(["--quick"] if quick else []),
            ]
        )
        return o


def _int_list(text, what) -> list[int]:
    if isinstance(text, int):
        return [text]
    try:
        vals = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{what} takes numbers like 2,1, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{what} takes positive numbers, got {text!r}")
    return list(dict.fromkeys(vals))


def _pythons(items) -> dict[str, str]:
    """``--python ENGINE=PATH`` (repeatable, or comma-separated): the interpreter that runs
    ``ENGINE``'s worker, e.g. a separate venv holding TensorFlow."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        for part in str(item).split(","):
            engine, eq, path = part.partition("=")
            engine = _ALIASES.get(engine.strip().lower(), engine.strip().lower())
            if not eq or not engine or not path.strip():
                raise ValueError(f"--python takes ENGINE=PATH, got {part!r}")
            if engine not in ("numpy", "tensorflow", "torch", "onnxruntime"):
                raise ValueError(f"--python: unknown engine {engine!r}")
            path = os.path.expanduser(path.strip())
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise ValueError(f"--python {engine}: {path!r} is not an executable file")
            out[engine] = path
    return out


def _peers(text) -> list[str]:
    """``--against``: comma list; default every installed peer; ``none`` or empty: no peer."""
    from .cases import PEERS

    if text is None:
        return list(PEERS)
    names = [_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in str(text).split(",")]
    names = [n for n in names if n and n != "none"]
    for n in names:
        if n not in PEERS:
            raise ValueError(f"unknown peer {n!r}; choose from {', '.join(PEERS)}")
    return list(dict.fromkeys(names))


def _backends(text) -> list[str]:
    """lepton_nn backends to run: default the best available plus ``reference``."""
    from ..backend import available

    have = available()
    if not text or str(text).strip().lower() == "auto":
        return list(dict.fromkeys([have[0], "reference"]))
    names = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    for n in names:
        if n not in have:
            raise ValueError(f"backend {n!r} is not available here (have: {', '.join(have)})")
    return names


def _workloads(text) -> list[str]:
    out = []
    for s in str(text).split(","):
        s = s.strip().upper()
        s = {
            "PARITY": "ACC",
            "ACCURACY": "ACC",
            "W5B1": "W5b1",
            "W5B64": "W5b64",
            "W5B256": "W5b256",
        }.get(s, s)
        s = s.replace("W6M", "W6m")
        s = {w.upper(): w for w in W8_CASES}.get(s, s)
        if s not in ALL_WORKLOADS and s not in ("W5b1", "W5b64", "W5b256", *W6_SIZES, *W8_CASES):
            raise ValueError(f"unknown workload {s!r}; choose from {', '.join(ALL_WORKLOADS)}")
        out.append(s)
    return list(dict.fromkeys(out))


def timed_workloads(workloads) -> list[str]:
    """The timed workloads among ``workloads``, W5, W6 and W8 expanded to their sizes."""
    single = ("W1", "W2", "W3", "W4", "W5b1", "W5b64", "W5b256", *W6_SIZES, *W8_CASES)
    groups = {"W5": ["W5b1", "W5b64", "W5b256"], "W6": list(W6_SIZES), "W8": list(W8_CASES)}
    out = []
    for w in workloads:
        out += groups.get(w, [w] if w in single else [])
    return list(dict.fromkeys(out))
