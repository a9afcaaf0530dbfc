"""Issue 23's LSTM inference at batch 256: our runtime against PyTorch's fused ``nn.LSTM``
(fp32) and its dynamic-quantized LSTM (int8 weights, activations quantized per batch at
run time) against our int8 LSTM, on the same weights, in one process, interleaved rounds,
medians.

The network is W4's recurrent part (T = 50 steps of F = 8 features -> LSTM 64 units, last
state). Ours: the ``.lnn`` file of ``lepton_nn.nn.LSTM`` (fp32), and of
``lepton_nn.compress.quantize(model, x)`` (dynamic: int8 W_ih and W_hh, x and each step's h
quantized per row), served by ``lepton_nn.runtime``. PyTorch: ``torch.nn.LSTM`` with the
same weights under ``torch.inference_mode()``, and ``torch.ao.quantization.quantize_dynamic``
of it (skipped where this torch has no quantized engine). Threads: torch's intra-op count;
ours ``threads=`` and NumPy's OpenBLAS count.

    python benchmarks/bench_rnn_torch.py [--rounds 11] [--batches 256] [--threads 1,2]
        [--cells LSTM,GRU] [--cpu-time]

Prints per case our median, torch's, torch's time over ours (> 1: we are faster), the
spread, and each engine's largest distance from torch's float layer; the load average
before and after. ``--cells LSTM,GRU`` adds the same GRU (torch's gate order r, z, n).
``--cpu-time`` times the calling thread's CPU time instead of the wall clock (a
load-robust signal for 1-thread cases on a busy machine; meaningless at 2 threads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import numpy as np

T, F, U = 50, 8, 64


def _models(rng, cell: str = "LSTM"):
    """(our float model, torch nn.LSTM / nn.GRU) with the same weights (non-zero biases).
    Gate blocks: LSTM i, f, g, o in both; GRU ours z, r, n, torch's r, z, n (both reset
    after the product, b_hh inside it)."""
    import torch

    from lepton_nn import nn

    layer = getattr(nn, cell)(U, input_size=F)
    model = nn.Sequential([layer])
    model.eval()
    model(np.zeros((1, T, F), np.float32))
    for p in model.parameters():
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape).astype(np.float32)
    ref = getattr(torch.nn, cell)(F, U, batch_first=True)
    order = np.arange(4 * U) if cell == "LSTM" else np.r_[U : 2 * U, 0:U, 2 * U : 3 * U]

    def put(dst, a):  # ours (..., G U) in torch's gate order, transposed: (G U, ...)
        dst.copy_(torch.from_numpy(np.ascontiguousarray(a[..., order].T)))

    with torch.no_grad():
        put(ref.weight_ih_l0, layer.weight_ih.data)
        put(ref.weight_hh_l0, layer.weight_hh.data)
        put(ref.bias_ih_l0, layer.bias.data)
        if cell == "GRU":
            put(ref.bias_hh_l0, layer.bias_hh.data)
        else:
            ref.bias_hh_l0.zero_()
    ref.eval()
    return model, ref


def _torch_int8(ref):
    """torch's dynamic-quantized form of ``ref``. ``quantize_dynamic`` swaps the children of
    the module it is given, never the module itself: given the bare ``nn.LSTM`` it returns
    the float LSTM unchanged (this benchmark's "int8" peer was torch's float LSTM until the
    LSTM was wrapped)."""
    import torch

    q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(ref), {type(ref)},
                                               torch.qint8)[0]  # fmt: skip
    if type(q) is type(ref):
        raise RuntimeError(f"quantize_dynamic left the {type(ref).__name__} in float")
    return q


def _torch_last(module):
    import torch

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x))[0][:, -1].numpy()

    return run


def _clock(cpu: bool):
    return time.thread_time if cpu else time.perf_counter


def _timed(fn, x, reps: int, clock) -> float:
    t0 = clock()
    for _ in range(reps):
        fn(x)
    return (clock() - t0) / reps


def _case(label, engines, exact, x, args, clock) -> None:
    """Interleaved rounds of ``engines`` on x; prints medians, torch/ours, spreads and each
    engine's largest distance from torch's float layer (``exact``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = exact(x)
        err = {k: float(np.max(np.abs(f(x) - want))) for k, f in engines.items()}
        per = {k: _timed(f, x, 2, time.perf_counter) for k, f in engines.items()}
        reps = {k: max(1, int(args.budget / v)) for k, v in per.items()}
        times: dict[str, list[float]] = {k: [] for k in engines}
        for r in range(args.rounds):
            for k in list(engines) if r % 2 == 0 else list(engines)[::-1]:
                times[k].append(_timed(engines[k], x, reps[k], clock))
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v) / med[k], max(v) / med[k]) for k, v in times.items()}
    print(
        f"{label}: ours {med['ours'] * 1e3:8.3f} ms  torch {med['torch'] * 1e3:8.3f} ms  "
        f"torch/ours {med['torch'] / med['ours']:5.2f}  (spread ours "
        f"{spread['ours'][0]:.2f}-{spread['ours'][1]:.2f}, torch "
        f"{spread['torch'][0]:.2f}-{spread['torch'][1]:.2f})  max |y - float torch| ours "
        f"{err['ours']:.1e} torch {err['torch']:.1e}",
        flush=True,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--batches", default="256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=0.1, help="seconds per engine per round")
    ap.add_argument("--cpu-time", action="store_true")
    ap.add_argument("--cells", default="LSTM", help="LSTM, GRU or both: LSTM,GRU")
    args = ap.parse_args(argv)

    import torch

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.compress import quantize

    clock = _clock(args.cpu_time)
    blas = _the_blas()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}", flush=True)
    for cell in args.cells.split(","):
        model, ref = _models(rng, cell)
        calib = rng.standard_normal((256, T, F)).astype(np.float32)
        with warnings.catch_warnings():  # torch's quantized tensors are deprecated, still there
            warnings.simplefilter("ignore")
            try:
                qref = _torch_int8(ref)
                _torch_last(qref)(calib[:2])
            except (RuntimeError, AttributeError) as exc:  # no quantized engine in this build
                print(f"torch dynamic-quantized {cell} unavailable: {exc}")
                qref = None
        with tempfile.TemporaryDirectory() as tmp:
            paths = {"fp32": os.path.join(tmp, "f.lnn"), "int8": os.path.join(tmp, "q.lnn")}
            L.save(model, paths["fp32"])
            L.save(quantize(model, calib), paths["int8"])
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                for kind in ("fp32", "int8"):
                    peer = ref if kind == "fp32" else qref
                    if peer is not None:
                        ours = rt.load(paths[kind], threads=threads)
                        engines = {"ours": ours.forward, "torch": _torch_last(peer)}
                        for n in map(int, args.batches.split(",")):
                            x = rng.standard_normal((n, T, F)).astype(np.float32)
                            if blas.set is not None:
                                blas.set(threads)
                            label = f"{cell.lower()} {kind} batch {n:3d} threads {threads}"
                            _case(label, engines, _torch_last(ref), x, args, clock)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
