"""Stateful streaming inference: one new time step per call, for many independent streams.

``session = lepton_nn.runtime.load(path).stream(max_streams=..., idle_seconds=...)`` serves a
network of unidirectional recurrent layers (LSTM / GRU / SimpleRNN, stacked) one time step at
a time. Each stream (a sensor, a card) has a key; the session keeps every live stream's
recurrent state, so a new sample costs one cell step per layer, not a re-run of the window::

    y = session.step(x_t, keys)        # x_t (S, F) for the S streams named in keys -> (S, ...)
    y = session.step(x_t)              # x_t (F,): the one stream of key None -> (1, ...)

For a stream fed x_1 .. x_t, ``y`` is what the whole network gives for that sequence so far:

- the last recurrent layer returns its final state: the network's output for the sequence
  x_1..x_t (``model.predict(x, lengths=[t])`` on the padded window; after T steps, exactly
  ``model.predict(x)``);
- it returns sequences: that output's row t (the layers are causal), (S, U').

Per layer and step, with the states of the S streams gathered into (S, U) rows::

    xz = [x_t, 1] [[W_ih], [b]]        (int8 weights: the file's Int8DenseStep, per row)
    hz = h W_hh                        (int8: h quantized per row, as the plan does)
    h, c = cell_step(xz, hz, h, c)     (the backend's lstm/gru/rnn_step_forward kernels)

the very calls :class:`~lepton_nn.runtime.steps_recurrent.RecurrentStep` makes for one step, so the
outputs match a whole-sequence run to float rounding (the float input product is one GEMM
over all steps there, one per step here). Steps between recurrent layers must act on each
time step alone (activations, softmax, LayerNorm); after a final state anything goes (it
sees one vector per stream, as in the full plan). Bidirectional layers are refused: their
reverse direction reads the future.

Streams: a new key starts from the zero state. ``reset(key)`` zeroes one, ``drop(key)``
forgets it. At most ``max_streams`` live at once; a stream not stepped for ``idle_seconds``
expires (when room is needed, and at most every ``idle_seconds / 2`` otherwise); a new key
with every slot taken by a live stream raises :class:`StreamLimitError`.
``export_state()`` / ``import_state(state)`` carry every stream over a restart.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from lepton_nn.backend.threads import BLAS_SPLIT_MIN_FLOPS, blas_held
from lepton_nn.errors import LeptonError, ShapeError

from .kernels import kernels
from .steps import LayerNormStep
from .steps_dense import ActivationStep, SoftmaxStep, _Ctx
from .steps_extra import ElementwiseStep
from .steps_recurrent import RecurrentStep

__all__ = ["StreamSession", "StreamLimitError", "STATE_FORMAT"]

#: Steps that act on each time step alone (the last axis): run on (S, U) rows as they are.
TIME_LOCAL = (ActivationStep, SoftmaxStep, LayerNormStep, ElementwiseStep)
STATE_FORMAT = "lepton_nn.stream-state"
MAX_BOUND = 8  # stream counts S that keep their bound calls (least recently used dropped)


class StreamLimitError(LeptonError):
    """A new stream was asked for while ``max_streams`` streams are live (none idle)."""


class _Layer:
    """One recurrent layer's weights and the states of every stream: h (and c) (cap, U)."""

    def __init__(self, step: RecurrentStep, dtype: np.dtype) -> None:
        if len(step.dirs) != 1:
            raise LeptonError(
                f"{step.label} is bidirectional: its reverse direction reads the future, so it "
                "cannot run one step at a time; serve it on whole windows with predict()"
            )
        self.step, self.cell, self.units = step, step.cell, step.units
        w_ih, self.w_hh, b, self.b_hh, _ = step.dirs[0]
        self.q_ih, self.q_hh = step.int8[0]
        self.n_in = w_ih.shape[0]
        if self.q_ih is None:  # [x, 1] [[W_ih], [b]]: the bias inside the product, as the plan
            zero = np.zeros((1, w_ih.shape[1]), dtype)
            self.w_aug = np.concatenate([w_ih, zero if b is None else b[None].astype(dtype)])
        self.n_states = 2 if self.cell == "LSTM" else 1  # h, and the LSTM's cell c
        self.states = [np.zeros((0, self.units), dtype) for _ in range(self.n_states)]

    def grow(self, cap: int) -> None:
        for i, s in enumerate(self.states):
            new = np.zeros((cap, self.units), s.dtype)
            new[: len(s)] = s
            self.states[i] = new

    def bind(self, src: np.ndarray, ctx: _Ctx) -> tuple[list, list, list, np.ndarray]:
        """Ops for one step of S = ctx.n streams from ``src`` (S, F): (ops, state-before
        buffers, state-after buffers, output h (S, U))."""
        n, u, dt = ctx.n, self.units, ctx.dtype
        k = kernels()
        ops: list = []
        if self.q_ih is None:
            xa = np.ones((n, self.n_in + 1), dt)
            xz = np.zeros((n, self.w_aug.shape[1]), dt)
            ops += [(np.copyto, (xa[:, : self.n_in], src)), (np.matmul, (xa, self.w_aug, xz))]
        else:
            ih_ops, xz = self.q_ih.bind(src, False, ctx)
            ops += ih_ops
        before = [np.zeros((n, u), dt) for _ in range(self.n_states)]
        after = [np.zeros((n, u), dt) for _ in range(self.n_states)]
        hp, hq = before[0], after[0]
        if self.q_hh is None:
            hz = np.zeros((n, self.w_hh.shape[1]), dt)
            ops.append((np.matmul, (hp, self.w_hh, hz)))
        else:
            hs = np.zeros((n, u), np.float32)  # as the plan: h in float32, then int8 per row
            hh_ops, hz = self.q_hh.bind(hs, True, ctx)
            ops += [(np.copyto, (hs, hp, "same_kind")), *hh_ops]
        gates = np.zeros((n, 4 * u), dt)
        if self.cell == "LSTM":
            ops.append((k.lstm_step_forward, (xz, hz, before[1], hp, None, gates, after[1], hq)))
        elif self.cell == "GRU":
            ops.append((k.gru_step_forward, (xz, hz, self.b_hh, hp, None, gates, hq)))
        else:
            ops.append((k.rnn_step_forward, (xz, hz, hp, None, hq)))
        return ops, before, after, hq


class _Bound:
    """Every call of one step for S streams, on buffers allocated once."""

    def __init__(self, session: StreamSession, n: int) -> None:
        ctx = _Ctx(n, 1, session.model.sparse, session.dtype)
        self.x = np.zeros((n, session.n_features), session.dtype)
        self.ops: list = []
        self.before: list[np.ndarray] = []  # per layer and state, gathered from the session
        self.after: list[np.ndarray] = []
        src, owned = self.x, False
        for kind, step in session.parts:
            if kind == "recurrent":
                ops, before, after, src = step.bind(src, ctx)
                self.before += before
                self.after += after
                owned = False  # src is a state: never overwritten in place
            else:
                ops, src = step.bind(src, owned, ctx)
                owned = True
            self.ops += ops
        self.out = src
        # BLAS would split products this large over threads: too little work to gain, and on
        # shared cores its woken workers stall (1,000 streams: 16 ms a step split, 0.6 held)
        per_row = max(2 * layer.w_hh.shape[0] * layer.w_hh.shape[1] for layer in session.layers)
        self.hold_blas = n * per_row >= BLAS_SPLIT_MIN_FLOPS


class StreamSession:
    """Many independent streams through one recurrent network, one time step per call.

    See the module docstring. ``model``: an :class:`~lepton_nn.runtime.InferenceModel`;
    ``clock``: seconds (``time.monotonic``), replaceable in tests. Calls from several threads
    are serialized by a lock.
    """

    def __init__(
        self,
        model: Any,
        max_streams: int = 10_000,
        idle_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be a positive int, got {max_streams!r}")
        if idle_seconds is not None and not idle_seconds > 0:
            raise ValueError(f"idle_seconds must be > 0 or None, got {idle_seconds!r}")
        self.model = model
        self.max_streams = max_streams
        self.idle_seconds = None if idle_seconds is None else float(idle_seconds)
        self.clock = clock
        net = model.network
        self.dtype = net.dtype
        self.parts, self.layers, self.sequences = _split(net)
        shape = net.input_shape
        self.n_features = shape[1]
        self._slots: dict[Hashable, int] = {}  # key -> row of the state arrays
        self._free: list[int] = []
        self._cap = 0
        self._seen = np.zeros(0)  # per slot: the clock at its last step
        self._steps = np.zeros(0, np.int64)  # per slot: steps taken since its start or reset
        self._last_sweep = clock()
        self._bound: OrderedDict[int, _Bound] = OrderedDict()
        self._lock = threading.Lock()

    # -- streams ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    def keys(self) -> list:
        """The live streams' keys, oldest first."""
        return list(self._slots)

    def steps_taken(self, key: Hashable) -> int:
        """How many steps stream ``key`` has taken since it started (or was reset)."""
        return int(self._steps[self._slot_of(key)])

    def reset(self, key: Hashable) -> None:
        """Zero stream ``key``'s state (it goes on as a new sequence)."""
        with self._lock:
            slot = self._slot_of(key)
            for layer in self.layers:
                for s in layer.states:
                    s[slot] = 0
            self._steps[slot] = 0

    def drop(self, key: Hashable) -> None:
        """Forget stream ``key`` (a later step with it starts from the zero state)."""
        with self._lock:
            self._slot_of(key)
            self._free.append(self._slots.pop(key))

    def _slot_of(self, key: Hashable) -> int:
        try:
            return self._slots[key]
        except (KeyError, TypeError):
            raise LeptonError(f"no live stream with key {key!r}") from None

    def _grow(self, need: int) -> None:
        cap = min(self.max_streams, max(16, 2 * self._cap, need))
        for layer in self.layers:
            layer.grow(cap)
        self._free += range(cap - 1, self._cap - 1, -1)  # popped from the end: lowest first
        self._seen = np.concatenate([self._seen, np.zeros(cap - self._cap)])
        self._steps = np.concatenate([self._steps, np.zeros(cap - self._cap, np.int64)])
        self._cap = cap

    def _expire(self, now: float) -> None:
        """Drop every stream idle for longer than ``idle_seconds``."""
        self._last_sweep = now
        if self.idle_seconds is None:
            return
        old = [k for k, s in self._slots.items() if now - self._seen[s] > self.idle_seconds]
        for k in old:
            self._free.append(self._slots.pop(k))

    def _rows(self, keys: Sequence[Hashable], now: float) -> np.ndarray:
        """The slots of ``keys``; new keys get a zeroed slot (expiring idle ones for room)."""
        try:
            if len(set(keys)) != len(keys):
                raise LeptonError("keys: a stream appears twice in one step")
        except TypeError:
            raise LeptonError("keys: each stream key must be hashable (str, int)") from None
        new = [k for k in keys if k not in self._slots]
        if new:
            if len(self._slots) + len(new) > self._cap and self._cap < self.max_streams:
                self._grow(len(self._slots) + len(new))
            if len(self._free) < len(new):
                self._expire(now)
            if len(self._free) < len(new):
                raise StreamLimitError(
                    f"{len(self._slots)} streams are live, the most this session keeps "
                    f"(max_streams={self.max_streams}); drop some or wait for idle ones "
                    f"to expire (idle_seconds={self.idle_seconds})"
                )
            for k in new:
                slot = self._free.pop()
                for layer in self.layers:
                    for s in layer.states:
                        s[slot] = 0
                self._steps[slot] = 0
                self._slots[k] = slot
        return np.fromiter((self._slots[k] for k in keys), np.intp, count=len(keys))

    # -- stepping --------------------------------------------------------------------------------
    def step(self, x_t: Any, keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """The newest sample of each stream -> each stream's output (S, ...); a fresh array.

        ``x_t``: (F,) for the one stream ``keys`` names (default key None), or (S, F) with
        ``keys`` a sequence of S distinct stream keys (default 0 .. S-1).
        """
        x = np.asarray(x_t)
        if x.dtype.kind not in "biuf":
            raise ShapeError(f"stream step: x must be numeric, got an array of dtype {x.dtype}")
        if x.ndim == 1:
            x = x[None]
            if keys is None or isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
                keys = [keys]
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ShapeError(
                f"stream step: {self.layers[0].step.label} takes {self.n_features} features "
                f"per time step: x_t of shape ({self.n_features},) or (streams, "
                f"{self.n_features}), got {np.shape(x_t)}"
            )
        if keys is None:
            keys = range(x.shape[0])
        keys = list(keys)
        if len(keys) != x.shape[0]:
            raise ShapeError(f"stream step: {x.shape[0]} rows of x_t but {len(keys)} keys")
        if not np.isfinite(x).all():
            raise LeptonError("stream step: x_t holds NaN or infinite values")
        with self._lock:
            now = self.clock()
            if self.idle_seconds is not None and now - self._last_sweep > self.idle_seconds / 2:
                self._expire(now)
            rows = self._rows(keys, now)
            if not len(rows):
                return np.zeros((0, *self.output_shape), self.dtype)
            b = self._bind(len(rows))
            np.copyto(b.x, x, casting="unsafe")
            states = [s for layer in self.layers for s in layer.states]
            for s, buf in zip(states, b.before):
                np.take(s, rows, axis=0, out=buf)
            if b.hold_blas:
                with blas_held():
                    for fn, args in b.ops:
                        fn(*args)
            else:
                for fn, args in b.ops:
                    fn(*args)
            for s, buf in zip(states, b.after):
                s[rows] = buf
            self._seen[rows] = now
            self._steps[rows] += 1
            return b.out.copy()

    def _bind(self, n: int) -> _Bound:
        b = self._bound.get(n)
        if b is None:
            b = _Bound(self, n)
            if len(self._bound) >= MAX_BOUND:
                self._bound.popitem(last=False)
            self._bound[n] = b
        else:
            self._bound.move_to_end(n)
        return b

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One stream's output per step."""
        return self._bind(1).out.shape[1:]

    # -- state for a restart ---------------------------------------------------------------------
    def export_state(self) -> dict:
        """Every live stream's state: ``{"format", "keys", "steps", "states"}`` with
        ``states`` one (S, U) array per layer state (h, and c for an LSTM), rows in the order
        of ``keys``. Pass it to :meth:`import_state` of a session on the same network."""
        with self._lock:
            rows = np.fromiter(self._slots.values(), np.intp, count=len(self._slots))
            return {
                "format": STATE_FORMAT,
                "keys": list(self._slots),
                "steps": self._steps[rows].tolist(),
                "states": [s[rows].copy() for layer in self.layers for s in layer.states],
            }

    def import_state(self, state: dict) -> None:
        """Replace every stream with those of ``state`` (from :meth:`export_state`; arrays or
        nested lists). Checked whole before anything changes."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LeptonError(f"import_state: not a {STATE_FORMAT} dict")
        keys, steps, arrays = state.get("keys"), state.get("steps"), state.get("states")
        if not isinstance(keys, list) or not isinstance(steps, list) or len(steps) != len(keys):
            raise LeptonError("import_state: keys and steps must be lists of one length")
        shapes = [(len(keys), layer.units) for layer in self.layers for _ in layer.states]
        if not isinstance(arrays, list) or len(arrays) != len(shapes):
            raise LeptonError(f"import_state: expected {len(shapes)} state arrays")
        try:
            arrays = [np.asarray(a, dtype=self.dtype) for a in arrays]
            steps_a = np.asarray(steps, dtype=np.int64)
            hash(tuple(keys))
        except (TypeError, ValueError, OverflowError) as exc:
            raise LeptonError(f"import_state: {exc}") from None
        for a, shape in zip(arrays, shapes):
            if a.shape != shape or not np.isfinite(a).all():
                raise LeptonError(f"import_state: a state of shape {a.shape}, expected {shape}")
        if len(set(keys)) != len(keys) or len(keys) > self.max_streams:
            raise LeptonError("import_state: keys repeat or exceed max_streams")
        with self._lock:
            self._slots.clear()
            self._free = list(range(self._cap - 1, -1, -1))
            if len(keys) > self._cap:
                self._grow(len(keys))
            now = self.clock()
            states = [s for layer in self.layers for s in layer.states]
            for i, k in enumerate(keys):
                slot = self._free.pop()
                self._slots[k] = slot
                for s, a in zip(states, arrays):
                    s[slot] = a[i]
                self._steps[slot] = steps_a[i]
                self._seen[slot] = now

    def __repr__(self) -> str:
        return f"StreamSession(streams={len(self)}, max_streams={self.max_streams})"


def _split(net: Any) -> tuple[list, list[_Layer], bool]:
    """The network's steps as ("recurrent", _Layer) / ("step", step) parts, checked for
    streaming; the layers; whether the last recurrent layer returns sequences."""
    chains = getattr(net, "chains", None)
    if chains is not None and len(chains) != 1:
        raise LeptonError("stream(): graph models are not streamed yet (a single chain only)")
    if len(net.input_shape) != 2 or net.flat_input != net.input_shape:
        raise LeptonError(
            f"stream(): the network reads {net.input_shape} per sample, not sequences "
            "(time, features)"
        )
    steps = list(net.steps)
    last = max((i for i, s in enumerate(steps) if isinstance(s, RecurrentStep)), default=None)
    if last is None:
        raise LeptonError("stream(): the network has no recurrent layer to carry state")
    sequences = steps[last].sequences
    parts: list = []
    layers: list[_Layer] = []
    for i, s in enumerate(steps):
        if isinstance(s, RecurrentStep):
            layer = _Layer(s, net.dtype)
            layers.append(layer)
            parts.append(("recurrent", layer))
            continue
        if (i < last or sequences) and not isinstance(s, TIME_LOCAL):
            where = "before the last recurrent layer" if i < last else "after a sequence"
            raise LeptonError(
                f"stream(): {s.label} {where} reads more than one time step; only "
                "activations, softmax and LayerNorm can run one step at a time there"
            )
        parts.append(("step", s))
    return parts, layers, sequences
