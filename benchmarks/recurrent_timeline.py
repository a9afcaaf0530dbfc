"""Per-thread timeline of the fused recurrent kernel (``recurrent_rows_threads``) on
bench_vs_ort's layers (T=50 steps, F=8 features, U=64 units): where each thread's time goes.

Each call is traced (``_recurrent.rows_trace``: every step a participant runs, with its
time-stamp-counter ticks, and when each participant joins and leaves), and per thread count
and mode the medians over the calls are printed, in microseconds:

- ``wall``: a call's time; ``late``: when the last participant joined, after the call
  started (a pool worker whose vCPU had halted comes back late); a round is ``--calls``
  calls back to back (as bench_vs_ort's rounds), its first call apart (``first call``);
- per participant (``p0`` first to join, normally the caller): ``busy`` (the sum of its steps),
  ``idle`` (the rest of its time from the call's start to the call's end), ``steps``,
  ``us/step`` (the median step), ``gap`` (the median time between two of its steps: the
  hand-over of rows_share.h), ``moves`` (steps of a group run by another participant than
  the group's previous step: its states change cores);
- ``budget``: the 1-thread time over the thread count (the ideal at that count); ``both
  busy``: the time two participants were in a step at once;
- ``idle at the end``: from a participant's last step to the call's end (waiting for the
  other); ``OS ran others``: its time in the call minus its thread's CPU time.

Runs: ``1 t`` (one group), ``1 t, G groups`` (the rows cut as the 2-thread run's: the same
steps on one core, so that ``us/step`` compares a step's cost alone and side by side),
``2 t, G groups`` (each thread's range cut into ``--parts`` groups, the default) and ``2 t,
2 groups`` (a group a thread, as before the cut).

    PYTHONPATH=. python benchmarks/recurrent_timeline.py [--cells LSTM,GRU] [--batch 64]
        [--modes hot,settled] [--rounds 9] [--calls 12] [--parts 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

T, F, U = 50, 8, 64
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def _tick_ns(k) -> float:
    """Nanoseconds per time-stamp-counter tick, from 50 ms of perf_counter."""
    t0, c0 = time.perf_counter(), k.ticks()
    time.sleep(0.05)
    return (time.perf_counter() - t0) * 1e9 / (k.ticks() - c0)


def _one(recs: np.ndarray, start: int, end: int, ns: float) -> dict:
    """The figures of one traced call (records recs, call from tick start to end)."""
    us = ns / 1e3
    out = {"wall": (end - start) * us}
    joins, leaves = recs[recs[:, 2] == -1], recs[recs[:, 2] == -2]
    out["late"] = (joins[:, 3].max() - start) * us if len(joins) else 0.0
    steps = recs[recs[:, 2] >= 0]
    order = steps[np.argsort(steps[:, 3])]
    out["groups"] = len(set(order[:, 1].tolist()))
    edges = sorted([(a, 1) for a in order[:, 3].tolist()] + [(b, -1) for b in order[:, 4].tolist()])
    running, since, both = 0, start, 0
    for tick, d in edges:  # the time two or more participants were in a step
        both += tick - since if running >= 2 else 0
        running, since = running + d, tick
    out["both"] = both * us
    prev: dict[int, int] = {}
    moves = {}
    for who, group, *_ in order.tolist():
        if group in prev and prev[group] != who:
            moves[who] = moves.get(who, 0) + 1
        prev[group] = who
    for who in sorted(set(joins[:, 0].tolist())):
        mine = order[order[:, 0] == who]
        left = leaves[leaves[:, 0] == who]
        busy = float((mine[:, 4] - mine[:, 3]).sum()) * us
        gaps = (mine[1:, 3] - mine[:-1, 4]) * us
        span = float(left[0, 4] - left[0, 3]) * us if len(left) else 0.0
        out[who] = {
            "busy": busy,
            "idle": out["wall"] - busy,
            "end": (end - mine[-1, 4]) * us if len(mine) else out["wall"],
            "off": span - (float(left[0, 5]) / 1e3 if len(left) else 0.0),
            "steps": len(mine),
            "step": float(np.median(mine[:, 4] - mine[:, 3])) * us if len(mine) else 0.0,
            "gap": float(np.median(gaps)) if len(gaps) else 0.0,
            "moves": moves.get(who, 0),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="LSTM,GRU")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--modes", default="hot,settled")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=12, help="calls back to back a round")
    ap.add_argument("--parts", type=int, default=2, help="groups a thread's range is cut into")
    args = ap.parse_args(argv)

    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.kernels import _recurrent as k

    ns = _tick_ns(k)
    n = args.batch
    print(f"load average before: {os.getloadavg()}  ({ns:.3f} ns a tick)")
    rng = np.random.default_rng(0)
    for cell in args.cells.split(","):
        g = GATES[cell]
        w_ih = (rng.standard_normal((F, g * U)) * 0.3).astype(np.float32)
        w_hh = (rng.standard_normal((U, g * U)) * 0.2).astype(np.float32)
        b = (rng.standard_normal(g * U) * 0.1).astype(np.float32)
        b_hh = (rng.standard_normal(g * U) * 0.1).astype(np.float32) if cell == "GRU" else None
        wp = ReferenceBackend().pack_recurrent(cell, w_ih, b, w_hh, b_hh)
        x = rng.standard_normal((T, n, F)).astype(np.float32)
        h = np.zeros((2, n, U), np.float32)
        c = np.zeros((2, n, U), np.float32) if cell == "LSTM" else None
        half = [0, n // 2, n]
        runs = {  # name: bounds, threads, parts
            "1 t": ([0, n], 1, 1),
            f"1 t, {2 * args.parts} groups": (half, 1, args.parts),
            f"2 t, {2 * args.parts} groups": (half, 2, args.parts),
            "2 t, 2 groups": (half, 2, 1),
        }
        buf = np.zeros((8 * T + 64, 6), np.int64)
        for mode in args.modes.split(","):
            got: dict[str, list] = {name: [] for name in runs}
            first: dict[str, list] = {name: [] for name in runs}
            for r in range(args.rounds + 1):
                for name, (bounds, th, parts) in runs.items():
                    bd = np.array(bounds, np.int64)
                    if mode == "settled":
                        time.sleep(0.3)
                    for i in range(args.calls):
                        k.rows_trace(buf)
                        t0 = k.ticks()
                        k.recurrent_rows_threads(
                            cell, x, wp, h, c, None, bd, False, th, None, parts
                        )
                        t1 = k.ticks()
                        m = k.rows_trace(None)
                        if r:  # the first round warms up
                            one = _one(buf[:m].copy(), t0, t1, ns)
                            (got[name] if i else first[name]).append(one)
            one = statistics.median(o["wall"] for o in got["1 t"])
            for name, outs in got.items():
                th = runs[name][1]
                med = statistics.median
                print(
                    f"{cell} b{n} {mode:7s} {name:14s} wall {med(o['wall'] for o in outs):6.0f}"
                    f" (first call {med(o['wall'] for o in first[name]):6.0f}, late"
                    f" {med(o['late'] for o in first[name]):5.0f}; later calls late"
                    f" {med(o['late'] for o in outs):4.0f})  budget {one / th:6.0f}"
                    f"  both busy {med(o['both'] for o in outs):6.0f}"
                )
                for who in range(th):
                    ps = [o[who] for o in outs if who in o]
                    if not ps:
                        continue
                    print(
                        f"    p{who}: busy {med(p['busy'] for p in ps):6.0f}"
                        f"  idle {med(p['idle'] for p in ps):6.0f}"
                        f"  steps {med(p['steps'] for p in ps):4.0f}"
                        f"  us/step {med(p['step'] for p in ps):5.1f}"
                        f"  idle at the end {med(p['end'] for p in ps):5.0f}"
                        f"  OS ran others {med(p['off'] for p in ps):5.0f}"
                        f"  gap {med(p['gap'] for p in ps):5.2f}"
                        f"  moves {med(p['moves'] for p in ps):3.0f}"
                    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
