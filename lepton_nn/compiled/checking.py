"""``check=True``: the state a step changes (parameters, optimizer state and counters), saved
so that the replay and the eager step can run from the same start and be compared."""

from __future__ import annotations

import copy

import numpy as np

from ..errors import CompileError

# compiled (Numba) replay vs eager where transcendental ops round differently (see codegen)
RTOL, ATOL = 1e-4, 1e-6


class Snapshot:
    def __init__(self, tape):
        self.params = [(p, p.data.copy()) for p, _ in tape.params]
        self.opts = [(o, copy.deepcopy(o.state), o.steps, o.lr) for o in tape.optimizers]

    def restore(self) -> None:
        for p, data in self.params:
            p.data[...] = data
        for o, state, steps, lr in self.opts:
            for key, st in state.items():
                live = o.state.setdefault(key, {})
                for k, v in st.items():
                    if isinstance(v, np.ndarray) and isinstance(live.get(k), np.ndarray):
                        live[k][...] = v
                    else:
                        live[k] = copy.deepcopy(v)
            o.steps, o.lr = steps, lr

    def compare(self, other: Snapshot, exact: bool) -> None:
        pairs = [(f"parameter {k} {p.shape}", a, b)
                 for k, ((p, a), (_, b)) in enumerate(zip(self.params, other.params))]  # fmt: skip
        for (o, sa, steps_a, _), (_, sb, steps_b, _) in zip(self.opts, other.opts):
            if steps_a != steps_b:
                raise CompileError(f"check=True: {type(o).__name__}.steps {steps_a} vs {steps_b}")
            for key in sa:
                for k, v in sa[key].items():
                    pairs.append((f"{type(o).__name__} state {k!r}", np.asarray(v),
                                  np.asarray(sb[key][k])))  # fmt: skip
        for what, a, b in pairs:
            same = (
                np.array_equal(a, b, equal_nan=True)
                if exact
                else np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
            )
            if not same:
                diff = np.max(np.abs(a.astype(np.float64) - b)) if a.size else 0.0
                raise CompileError(
                    f"check=True: the replay and the eager step disagree on {what} "
                    f"(max |difference| {diff:.3g})"
                )


def snapshot(tape) -> Snapshot:
    return Snapshot(tape)
