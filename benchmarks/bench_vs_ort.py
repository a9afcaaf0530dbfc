"""Issue 23's inference misses: our runtime against ONNX Runtime on the same weights, in one
process, interleaved rounds, medians.

Cases: the 784-512-256-10 MLP (fp32, ReLU) at batch 1 and 64, an LSTM / GRU (T=50 steps,
F=8 features, U=64 units, last state), and a CNN on 1x28x28 (two blocks of Conv 3x3 "same"
-> BatchNorm -> ReLU -> MaxPool 2, 16 then 32 filters, then Dense 10: bench_onnx.py's), each
at batch 1 and 64, 1 and 2 threads. The ONNX graphs are built with ``onnx.helper`` from the
very arrays in the ``.lnn`` file (MatMul / Add / Relu; one ``LSTM`` / ``GRU`` node behind a
``Transpose`` to time-major; Conv / BatchNormalization / Relu / MaxPool / Flatten / MatMul /
Add). Threads: ONNX Runtime's intra-op count; ours through NumPy's OpenBLAS count and
``threads=``.

    python benchmarks/bench_vs_ort.py [--rounds 15] [--cases mlp,lstm,gru,cnn]

Prints, per case, our median, ONNX Runtime's, ONNX Runtime's time over ours (> 1: we are
faster) and the fraction of this machine's limit we reach: for the MLP at batch 1 the
weights' bytes over our time against the speed of reading that many bytes once (np.dot of a
vector that size with itself: a batch-1 MLP reads every weight once, so it is memory-bound),
else our FLOP/s against a large fp32 GEMM's (measured here, one thread; at 2 threads against
twice that). A 64 MiB copy's bandwidth (DRAM) is printed too. The load average before and after.

``--modes hot,settled`` times each case twice: hot (a server's steady state under load: calls
back to back, the engine's own pool threads awake) and settled (the default: a server's first
calls after an idle spell).

Both engines run in this one process, and at more than one thread ONNX Runtime's intra-op
workers spin for ~0.1-0.15 s after its last call (measured here: its workers used CPU for
0.10-0.15 s after 50 calls, then ~0; OpenBLAS's spin after a threaded GEMM too, ours 5 ms). A
round started inside that window shares its cores with them: in the old hot mode (rounds back
to back) our 2-thread MLP batch 64 took 1,206 us against 705 settled, near our 1-thread time.
A server runs one engine, so neither is timed against the other's leftover spinning:

- **settled**: each engine's round starts after ``--settle`` s of sleep (0.3 s): the other's
  workers have stopped, and so have its own.
- **hot**: each engine's round starts after ``--lead`` s (0.25 s) of its own untimed calls,
  back to back: the other engine's workers have stopped spinning meanwhile, its own are awake,
  as in a server that runs only it (``--lead 0``: the old, unfair hot mode). Not ONNX
  Runtime's ``session.intra_op.allow_spinning = 0``: that would time a setting its users do
  not run; not one process per engine: the other process's spinning workers would take the
  cores all the same.

Each row says how much CPU the other engine's threads used while this engine's timed calls
ran ("other's threads", in CPUs; from ``/proc/self/task``; ~0 when the method is fair), and
the host's state before and after the row's rounds (each CPU's speed on a fixed compiled loop,
the cross-CPU round trip; ``lepton_nn.bench.hoststate``), marked HOST UNEVEN when the CPUs ran
unevenly or the round trip was in its slow mode: such a row's 2-thread figures carry it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

T, F, U = 50, 8, 64


def _mlp(rng):
    import lepton_nn as L
    from lepton_nn import nn

    sizes = (784, 512, 256, 10)
    layers = [
        nn.Dense(n, "relu" if i < 2 else None, in_features=k)
        for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    model = nn.Sequential(layers)
    model.eval()
    model(np.zeros((1, 784), np.float32))
    L.set_seed(0)
    ws = [(layer.weight.data, layer.bias.data) for layer in model.layers]
    from lepton_nn.bench.engines.onnx_runtime import onnx_mlp_bytes

    return model, onnx_mlp_bytes(ws), (784,)


def _cnn(rng):
    from onnx import TensorProto, helper, numpy_helper

    from lepton_nn import nn

    layers = []
    for c, f in ((1, 16), (16, 32)):
        layers += [nn.Conv2D(f, 3, padding="same", in_channels=c), nn.BatchNorm(), nn.ReLU()]
        layers.append(nn.MaxPool2D(2))
    model = nn.Sequential([*layers, nn.Flatten(), nn.Dense(10)])
    model(np.zeros((2, 1, 28, 28), np.float32))
    for bn in (layers[1], layers[5]):  # running statistics as a trained network has them
        bn.running_mean[...] = rng.uniform(-0.5, 0.5, bn.running_mean.shape)
        bn.running_var[...] = rng.uniform(0.5, 2.0, bn.running_var.shape)
        bn.weight.data[...] = rng.uniform(0.5, 1.5, bn.weight.data.shape)
        bn.bias.data[...] = rng.uniform(-0.5, 0.5, bn.bias.data.shape)
    model.eval()
    inits, nodes, h = [], [], "x"
    for k, (conv, bn) in enumerate(((layers[0], layers[1]), (layers[4], layers[5]))):
        names = [f"w{k}", f"b{k}", f"g{k}", f"be{k}", f"m{k}", f"v{k}"]
        arrays = [conv.weight.data, conv.bias.data, bn.weight.data, bn.bias.data,
                  bn.running_mean, bn.running_var]  # fmt: skip
        inits += [numpy_helper.from_array(np.asarray(a, np.float32), n)
                  for a, n in zip(arrays, names, strict=True)]  # fmt: skip
        nodes += [
            helper.make_node("Conv", [h, names[0], names[1]], [f"c{k}"], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization", [f"c{k}", *names[2:]], [f"n{k}"], epsilon=bn.eps
            ),  # fmt: skip
            helper.make_node("Relu", [f"n{k}"], [f"r{k}"]),
            helper.make_node("MaxPool", [f"r{k}"], [f"p{k}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        h = f"p{k}"
    dense = model.layers[-1]
    inits += [numpy_helper.from_array(dense.weight.data, "wd"),
              numpy_helper.from_array(dense.bias.data, "bd")]  # fmt: skip
    nodes += [
        helper.make_node("Flatten", [h], ["f"]),
        helper.make_node("MatMul", ["f", "wd"], ["md"]),
        helper.make_node("Add", ["md", "bd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    return model, onnx_model.SerializeToString(), (1, 28, 28)


def _flops(name: str, n: int) -> float:
    """Multiply-adds x 2 of one forward pass at batch n."""
    if name == "mlp":
        return 2.0 * n * (784 * 512 + 512 * 256 + 256 * 10)
    if name == "cnn":
        return 2.0 * n * (16 * 9 * 784 + 32 * 144 * 196 + 1568 * 10)
    gates = 4 if name == "lstm" else 3
    return 2.0 * n * T * gates * U * (F + U)


def _machine(weight_bytes: int, reps: int = 5) -> tuple[float, float, float]:
    """(fp32 GEMM FLOP/s, copy bytes/s, read bytes/s) on this thread: a 1024^3 np.matmul, a
    64 MiB np.copyto (read + write counted: DRAM), and np.dot(v, v) over a vector of
    ``weight_bytes`` (each byte read once, from the cache level such a working set lives in:
    the bound of a batch-1 MLP whose weights are that big), best of ``reps``."""
    a = np.ones((1024, 1024), np.float32)
    c = np.empty_like(a)
    src = np.ones(16 << 20, np.float32)
    dst = np.empty_like(src)
    v = np.ones(weight_bytes // 4, np.float32)
    gemm = min(_timed(lambda _: np.matmul(a, a, c), None, 3) for _ in range(reps))
    copy = min(_timed(lambda _: np.copyto(dst, src), None, 3) for _ in range(reps))
    read = min(_timed(lambda _: np.dot(v, v), None, 20) for _ in range(4 * reps))
    return 2.0 * 1024**3 / gemm, 2.0 * src.nbytes / copy, v.nbytes / read


def _limit(name: str, n: int, seconds: float, machine, weight_bytes: int) -> str:
    """Our fraction of the machine's limit for this case (see the module docstring)."""
    if name == "mlp" and n == 1:
        return f"{weight_bytes / seconds / machine[2]:4.0%} of weight-read bandwidth"
    return f"{_flops(name, n) / seconds / machine[0]:4.0%} of GEMM peak"


def _rnn(cell, rng):
    from onnx import TensorProto, helper, numpy_helper

    from lepton_nn import nn

    layer = (nn.LSTM if cell == "LSTM" else nn.GRU)(U, input_size=F)
    model = nn.Sequential([layer])
    model.eval()
    model(np.zeros((1, T, F), np.float32))
    for p in model.parameters():  # non-zero biases, so that both bias paths are exercised
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape).astype(np.float32)
    w_ih, w_hh = layer.weight_ih.data, layer.weight_hh.data
    if cell == "LSTM":  # ours: blocks i, f, g, o; ONNX: i, o, f, c
        order = [0, 3, 1, 2]

        def blocks(a):
            return np.concatenate([a[..., k * U : (k + 1) * U] for k in order], axis=-1)

        wb = blocks(layer.bias.data)
        b = np.concatenate([wb, np.zeros_like(wb)])
        attrs = {}
    else:  # ours and ONNX: z, r, n; reset after the recurrent product
        blocks = np.asarray  # noqa: E731
        b = np.concatenate([layer.bias.data, layer.bias_hh.data])
        attrs = {"linear_before_reset": 1}
    inits = [
        numpy_helper.from_array(blocks(w_ih).T[None].copy(), "W"),
        numpy_helper.from_array(blocks(w_hh).T[None].copy(), "R"),
        numpy_helper.from_array(b[None].astype(np.float32), "B"),
    ]
    outs = ["Y", "Y_h"] if cell == "GRU" else ["Y", "Y_h", "Y_c"]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(cell, ["xt", "W", "R", "B"], outs, hidden_size=U, **attrs),
        helper.make_node("Squeeze", ["Y_h", "axes"], ["h"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        cell.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", U])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, onnx_model.SerializeToString(), (T, F)


def _timed(fn, x, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - t0) / reps


def _tids() -> set[int]:
    """This process's thread ids (empty where there is no /proc)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _cpu(tids) -> float | None:
    """CPU seconds the threads ``tids`` used so far (None where there is no /proc)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for t in tids:
        try:
            with open(f"/proc/self/task/{t}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick if tids else None


def _rounds(engines: dict, x, reps: dict, rounds: int, pause: float, lead: float, owners):
    """Medians and (min, max) / median spreads of each engine's time per call over
    ``rounds`` interleaved rounds (the order flips every round). Before each round: ``pause``
    s of sleep (settled) or ``lead`` s of the engine's own untimed calls (hot); either way
    the other engine's spinning workers stop. Also the CPUs the other engine's threads
    (``owners``: engine -> its own thread ids) used during this engine's timed calls."""
    times: dict[str, list[float]] = {k: [] for k in engines}
    other: dict[str, list[float]] = {k: [0.0, 0.0] for k in engines}  # CPU s, wall s
    for r in range(rounds):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for k in order:
            if pause:
                time.sleep(pause)
            t_end = time.perf_counter() + lead
            while time.perf_counter() < t_end:
                engines[k](x)
            theirs = set().union(*(v for o, v in owners.items() if o != k))
            c0 = _cpu(theirs)
            times[k].append(_timed(engines[k], x, reps[k]))
            c1 = _cpu(theirs)
            if c0 is not None and c1 is not None:
                other[k][0] += c1 - c0
                other[k][1] += times[k][-1] * reps[k]
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v) / med[k], max(v) / med[k]) for k, v in times.items()}
    return med, spread, {k: c / w if w else None for k, (c, w) in other.items()}


def _other_text(other: dict) -> str:
    """The CPUs the other engine's threads used during each engine's timed calls."""
    if any(v is None for v in other.values()):
        return ""
    return f"  other's threads: during ours {other['ours']:.2f} CPU, ort's {other['ort']:.2f}"


def _host_text(host0: dict, host1: dict, threads: int, describe, reasons) -> str:
    """The host's state before and after a row's rounds, and the mark if it was uneven."""
    uneven = reasons(host0, threads) + reasons(host1, threads)
    return (f"\n    host before: {describe(host0)}; after: {describe(host1)}"
            + ("  HOST UNEVEN" if uneven else ""))  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cases", default="mlp,lstm,gru,cnn")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=0.02, help="seconds per engine per round")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds of pause before each engine's round at > 1 thread")  # fmt: skip
    ap.add_argument("--lead", type=float, default=0.25,
                    help="hot mode at > 1 thread: seconds of the engine's own untimed calls "
                    "before each of its rounds (the other's workers stop spinning)")  # fmt: skip
    ap.add_argument("--modes", default="settled",
                    help="'settled' (a --settle pause before each round: the cores went idle, "
                    "as a server's between bursts), 'hot' (no pause: rounds back to back), "
                    "or both, comma-separated: one row per mode")  # fmt: skip
    args = ap.parse_args(argv)

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.bench.engines.onnx_runtime import ort_session
    from lepton_nn.bench.hoststate import describe, probe, reasons

    blas = _the_blas()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}", flush=True)
    print(f"host before: {describe(probe())}", flush=True)
    if blas.set is not None:
        blas.set(1)
    mlp_bytes = 4 * (784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10)
    machine = _machine(mlp_bytes)
    print(f"machine, 1 thread: fp32 GEMM {machine[0] / 1e9:.1f} GFLOP/s, copy "
          f"{machine[1] / 1e9:.1f} GB/s (64 MiB, read + write), read of the MLP's "
          f"{mlp_bytes / 1e6:.2f} MB {machine[2] / 1e9:.1f} GB/s: its batch-1 bound "
          f"{mlp_bytes / machine[2] * 1e6:.1f} us", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            build = {"mlp": _mlp, "cnn": _cnn}.get(name) or (lambda r, c=name.upper(): _rnn(c, r))
            model, onnx_bytes, shape = build(rng)
            weight_bytes = sum(p.data.nbytes for p in model.parameters())
            path = os.path.join(tmp, f"{name}.lnn")
            L.save(model, path)
            for threads in map(int, args.threads.split(",")):
                ours = rt.load(path, threads=threads)
                if blas.set is not None:
                    blas.set(threads)
                ours.forward(np.zeros((64, *shape), np.float32))  # our pool's threads start
                before = _tids()
                sess = ort_session(onnx_bytes, threads)
                sess.run(None, {"x": np.zeros((64, *shape), np.float32)})
                # ONNX Runtime's threads: those its session started; ours: the rest but this one
                mine = {threading.get_native_id()} if hasattr(threading, "get_native_id") else set()
                owners = {"ort": _tids() - before}
                owners["ours"] = _tids() - owners["ort"] - mine
                for n in map(int, args.batches.split(",")):
                    x = rng.standard_normal((n, *shape)).astype(np.float32)
                    y_ours = ours.forward(x)
                    y_ort = sess.run(None, {"x": x})[0]
                    err = float(np.max(np.abs(y_ours - y_ort)))
                    if err > 1e-3:
                        print(f"  {name} n={n}: outputs differ by {err:.2e}", file=sys.stderr)
                    engines = {
                        "ours": ours.forward,
                        "ort": lambda a, s=sess: s.run(None, {"x": a}),
                    }
                    per = {k: _timed(f, x, 3) for k, f in engines.items()}
                    reps = {k: max(1, int(args.budget / max(v, 1e-7))) for k, v in per.items()}
                    for mode in args.modes.split(","):
                        pause = args.settle if mode == "settled" and threads > 1 else 0.0
                        lead = args.lead if mode == "hot" and threads > 1 else 0.0
                        host0 = probe()
                        med, spread, other = _rounds(engines, x, reps, args.rounds, pause,
                                                     lead, owners)  # fmt: skip
                        host1 = probe()
                        ratio = med["ort"] / med["ours"]
                        rows.append((name, n, threads, mode, med["ours"], med["ort"], ratio))
                        us = {k: f"{v * 1e6:9.1f} us" for k, v in med.items()}
                        limit = _limit(name, n, med["ours"] * threads, machine, weight_bytes)
                        tag = f" {mode:7s}" if "," in args.modes else ""
                        print(
                            f"{name:5s} batch {n:3d} threads {threads}{tag}: ours {us['ours']}"
                            f"  ort {us['ort']}  ort/ours {ratio:5.2f}  (spread ours "
                            f"{spread['ours'][0]:.2f}-{spread['ours'][1]:.2f}, ort "
                            f"{spread['ort'][0]:.2f}-{spread['ort'][1]:.2f})  ours: {limit}"
                            + _other_text(other)
                            + _host_text(host0, host1, threads, describe, reasons),
                            flush=True,
                        )
    print(f"host after: {describe(probe())}")
    print(f"load average after: {os.getloadavg()}")
    return 0


def test_hot_mode_leaves_no_spinning_and_says_the_host(capsys):
    """Smoke (pytest benchmarks): one tiny hot and settled run at 2 threads prints the other
    engine's threads' CPU and the host's state on every row."""
    import pytest

    pytest.importorskip("onnxruntime")
    argv = ["--cases", "mlp", "--batches", "1", "--threads", "2", "--rounds", "2", "--modes",
            "hot,settled", "--budget", "0.001", "--lead", "0.05", "--settle", "0.05"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("mlp ")]
    assert len(rows) == 2 and all("ort/ours" in r for r in rows)
    assert out.count("    host before: ") == 2 and "host after: " in out
    if os.path.isdir("/proc/self/task"):
        assert all("other's threads: during ours" in r for r in rows)


if __name__ == "__main__":
    raise SystemExit(main())
