"""``CompiledStep``: capture a training step per input signature, validate it, replay it.

Call 1 with a signature (the shapes and dtypes of the array arguments, the values of the
others) runs the step eagerly while recording its tape; call 2 runs it eagerly again and
records a second tape that must equal the first (same ops, same constants), else
:class:`~lepton_nn.errors.ControlFlowError`; from call 3 on the replay runs. Python control
flow inside the step is captured as taken on those calls: ``check=True`` re-runs the eager
step on every call (from the same state) and compares.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend import get_backend
from ..errors import ControlFlowError, SignatureError, UnsupportedOpError
from .capture import Recorder, record
from .prims import numpy_replay


class Tape:
    """Slots, prims and bindings of one captured call."""

    def __init__(self, rec: Recorder, result):
        self.slots, self.ops, self.result = rec.slots, rec.ops, result
        self.inputs = {s: sl.ref for s, sl in enumerate(self.slots) if sl.kind == "input"}
        self.params = [(sl.ref, s) for s, sl in enumerate(self.slots) if sl.kind == "param"]
        self.grads = [(t, rec.grad_of[id(t)]) for t in rec.leaves if id(t) in rec.grad_of]
        self.optimizers = list(rec.optimizers)
        read = {s for p in self.ops for s in p.ins} | {self.slots[s].ref for s in self._views()}
        for s, k in self.inputs.items():
            if s not in read:
                raise UnsupportedOpError(
                    f"input {k} is never read by a captured op: the step converts it outside "
                    "them (pass C-contiguous arrays of the model's dtype; int64 class labels)"
                )

    def _views(self):
        return [s for s, sl in enumerate(self.slots) if sl.kind == "view"]

    def key(self):
        slots = []
        for sl in self.slots:
            ref = sl.ref
            if sl.kind == "const":
                ref = ref.tobytes()
            elif sl.kind == "param":
                ref = id(ref)
            slots.append((sl.shape, sl.dtype.str, sl.kind, ref))
        return tuple(slots), tuple(p.key() for p in self.ops), self.result

    def describe_difference(self, other: Tape) -> str:
        for k, (a, b) in enumerate(zip(self.ops, other.ops)):
            if a.key() != b.key():
                return f"op #{k}: {a.name} {a.ins}->{a.outs} vs {b.name} {b.ins}->{b.outs}"
        if len(self.ops) != len(other.ops):
            return f"{len(self.ops)} ops vs {len(other.ops)}"
        for k, (a, b) in enumerate(zip(self.slots, other.slots)):
            if a.kind == "const" and b.kind == "const" and a.ref.tobytes() != b.ref.tobytes():
                return (f"constant slot {k} {a.shape} changed between calls: it is computed "
                        "from the inputs outside the captured ops")  # fmt: skip
        return "different buffers or return value"

    def arrays(self) -> list:
        """One array per slot for the NumPy replay (temps and inputs allocated here)."""
        out: list = []
        for sl in self.slots:
            if sl.kind in ("temp", "input"):
                out.append(np.empty(sl.shape, sl.dtype))
            elif sl.kind == "param":
                out.append(sl.ref.data)
            elif sl.kind == "const":
                out.append(sl.ref)
            else:
                out.append(out[sl.ref].reshape(sl.shape))
        return out


class NumpyReplay:
    """The tape replayed as a list of NumPy calls over preallocated buffers (the twin)."""

    def __init__(self, tape: Tape):
        self.tape, self.be = tape, get_backend()
        self.A = tape.arrays()
        self.calls = numpy_replay(tape, self.be, self.A)

    def __call__(self, args):
        t, A = self.tape, self.A
        for s, k in t.inputs.items():
            np.copyto(A[s], _array(args[k]))
        if any(p.data is not A[s] for p, s in t.params):  # a parameter's array was replaced
            self.__init__(t)
        for call in self.calls:
            call()
        for p, s in t.grads:
            p.grad = A[s]
        return _results(t.result, A)


def _array(a):
    return a.data if isinstance(a, Tensor) else a


def _results(structure, A):
    if structure is None:
        return None
    if isinstance(structure, tuple):
        return tuple(_results(s, A) for s in structure)
    return Tensor(np.array(A[structure]))


def signature(args) -> tuple:
    sig = []
    for a in args:
        arr = _array(a)
        if isinstance(arr, np.ndarray):
            sig.append(("array", arr.shape, arr.dtype.str))
        elif isinstance(arr, (int, float, str, bool, type(None))):
            sig.append(("value", type(arr).__name__, arr))
        else:
            raise UnsupportedOpError(
                f"a compiled step takes arrays, Tensors and plain numbers, got {type(a).__name__}"
            )
    return tuple(sig)


def _contiguous(args) -> tuple:
    out = []
    for a in args:
        if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        elif isinstance(a, Tensor) and not a.data.flags.c_contiguous:
            a = Tensor(np.ascontiguousarray(a.data))
        out.append(a)
    return tuple(out)


def _fmt(sig) -> str:
    parts = [f"{np.dtype(s[2]).name}{list(s[1])}" if s[0] == "array" else repr(s[2]) for s in sig]
    return "(" + ", ".join(parts) + ")"


class CompiledStep:
    """``lepton_nn.compile(fn)``: see :func:`lepton_nn.compiled.compile`."""

    def __init__(self, fn, backend="auto", check=False, recapture=False, validate=True):
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
        if backend == "auto":
            import importlib.util

            backend = "numba" if importlib.util.find_spec("numba") else "numpy"
        self.fn, self.backend, self.check = fn, backend, check
        self.recapture, self.validate = recapture, validate
        self.entries: dict = {}  # signature -> [tape or None, calls seen, replay or None]

    def capture(self, args):
        """Run ``fn(*args)`` eagerly while recording; returns (result, tape)."""
        rec = Recorder(args)
        with record(rec):
            out = self.fn(*args)
            result = rec.result_slots(out)
        return out, Tape(rec, result)

    def __call__(self, *args):
        args = _contiguous(args)
        sig = signature(args)
        entry = self.entries.get(sig)
        if entry is None:
            if self.entries and not self.recapture:
                (old,) = list(self.entries)[:1]
                raise SignatureError(
                    f"compiled step captured for inputs {_fmt(old)}, called with {_fmt(sig)} "
                    "(compile(..., recapture=True) keeps one capture per signature)"
                )
            out, tape = self.capture(args)
            self.entries[sig] = [tape, 1, None]
            if not self.validate:
                self.entries[sig][2] = self._build(tape)
            return out
        tape, seen, replay = entry
        if replay is None:  # the validation call: the same tape again, or an error
            out, tape2 = self.capture(args)
            if tape2.key() != tape.key():
                del self.entries[sig]
                raise ControlFlowError(
                    "the step recorded different ops on its second call: "
                    + tape.describe_difference(tape2)
                )
            entry[2] = self._build(tape2)
            entry[0] = tape2
            return out
        if self.check:
            return self._checked(tape, replay, args)
        return replay(args)

    def _build(self, tape):
        if self.backend == "numpy":
            return NumpyReplay(tape)
        from .codegen import NumbaReplay

        return NumbaReplay(tape)

    def _checked(self, tape, replay, args):
        """Replay, then the eager step from the same state; both must agree."""
        from .checking import snapshot

        before = snapshot(tape)
        got = replay(args)
        after = snapshot(tape)
        before.restore()
        out, tape2 = self.capture(args)
        if tape2.key() != tape.key():
            raise ControlFlowError(
                "check=True: the eager step took other ops than the captured one: "
                + tape.describe_difference(tape2)
            )
        exact = self.backend == "numpy"
        after.compare(snapshot(tape), exact=exact)
        return got if out is None else out
