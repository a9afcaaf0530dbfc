"""``load(path) -> InferenceModel``: a saved network or tabular pipeline, ready to serve.

Kinds of file it runs (one ``.lnn`` container, see :mod:`lepton_nn.runtime.format`):

- ``"module"``: a bare network from ``lepton_nn.save(model)``; ``predict(x)`` returns what
  ``model(x)`` returns (same float values, as a NumPy array);
- ``"compressed"``: the same with int8 / sparse weights (:mod:`lepton_nn.runtime.compression`);
- ``"tabular"``: a network plus its preprocessing and labels::

      {"kind": "tabular",
       "model": {network section, optionally with "compression"},
       "preprocessing": Preprocessor.to_config(),     # raw rows -> network input
       "labels": LabelEncoder.to_config() | null,      # {"classes": [...], "positive": ...}
       "task": "binary" | "multiclass" | "regression",
       "threshold": 0.5,                               # binary: P(positive) >= threshold
       "target_scale": [mu, sd],                       # regression: value = mu + sd * output
       "output": "probabilities" | "logits",          # optional; else from the last activation
       "calibration": {...},                           # optional: runtime/calibration.py
       "profile": {...}}                               # optional: runtime/profile.py

  (what :class:`lepton_nn.tabular.TabularModel` writes; its predictions are reproduced
  exactly: binary p = 1 / (1 + exp(-z)) in float64, multiclass a softmax of the logits, or
  the file's calibration map of z when it has one).

  ``predict(rows)`` returns labels (regression: values) and ``predict_proba(rows)``
  probabilities, (N, C) in the order of ``classes`` (binary: ``[1 - p, p]``).
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_nn.backend import threads as _budget
from lepton_nn.errors import DataError, LeptonError, ModelFormatError, ShapeError

from .format import read_lnn
from .kernels import kernels
from .onecall import runner_for
from .plan import Network, Plan, parse_network
from .record import Record
from .validate import Limits, Summary, validate

if TYPE_CHECKING:  # imported by tabular files only (the validator parses their columns)
    from .preprocess import Preprocessing

__all__ = ["InferenceModel", "load", "from_manifest"]

SPARSE_MODES = ("auto", "sparse", "dense")


def load(
    path: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    sparse: str = "auto",
    max_plans: int = 8,
    limits: Any = None,
    trusted_keys: Any = None,
) -> InferenceModel:
    """Read an ``.lnn`` file (or an ``.onnx`` file, converted in memory when the ``onnx``
    extra is installed) and build its inference model.

    ``threads``: threads the plans split large batches over (small batches always run on
    one). None (the default) follows ``lepton_nn.get_num_threads()`` live: after a
    ``lepton_nn.set_num_threads(n)`` the model re-plans at its next call (set_num_threads
    marks it stale: no check on its calls' path). An int pins it (``model.threads = None``
    follows the process setting again). ``sparse``: ``"auto"`` picks sparse or dense per
    layer and batch size by timing both, ``"sparse"``/``"dense"`` force one. ``max_plans``: how many
    batch sizes keep a plan (the least recently used dropped first). ``limits``: the resource
    budget (:class:`~lepton_nn.runtime.validate.Limits` or a dict of some of its fields),
    checked from the manifest before any array is read. ``trusted_keys``: Ed25519 public
    keys (PEM bytes or paths); the file must be signed by one of them
    (:mod:`lepton_nn.runtime.signing`).
    """
    limits = Limits.of(limits)
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(".onnx"):
        if trusted_keys is not None:
            raise ModelFormatError("an ONNX file carries no signature: trusted_keys cannot apply")
        # converted in memory by the onnx extra's converter (imports onnx, never layers)
        from lepton_nn.onnx import onnx_to_manifest

        manifest, arrays, _ = onnx_to_manifest(path)
    else:
        checked: list = []  # the validator's summary, from the manifest's array table
        check = lambda m: checked.append(validate(m, None, limits))  # noqa: E731
        manifest, arrays = read_lnn(path, check=check, trusted_keys=trusted_keys)
        # read_lnn returned exactly the table's arrays, each of the dtype and shape it
        # declares (checked against its .npy header, hashed): the summary holds for them
        return InferenceModel(
            manifest, arrays, threads=threads, sparse=sparse, max_plans=max_plans,
            limits=limits, summary=checked[0],
        )  # fmt: skip
    return from_manifest(
        manifest, arrays, threads=threads, sparse=sparse, max_plans=max_plans, limits=limits
    )


def from_manifest(
    manifest: dict,
    arrays: dict[str, np.ndarray],
    *,
    threads: int | None = None,
    sparse: str = "auto",
    max_plans: int = 8,
    limits: Any = None,
) -> InferenceModel:
    """An :class:`InferenceModel` from a manifest and arrays already in memory."""
    return InferenceModel(
        manifest, arrays, threads=threads, sparse=sparse, max_plans=max_plans, limits=limits
    )


def _refuse_non_finite(x: np.ndarray) -> None:
    """DataError naming the rows of ``x`` (N, ...) holding inf or NaN, if any."""
    bad = np.flatnonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))
    if bad.size:
        rows = ", ".join(map(str, bad[:5].tolist())) + (", ..." if bad.size > 5 else "")
        raise DataError(
            f"model input has inf or NaN values in {bad.size} row(s) (0-based: {rows}); "
            "the network's output would be meaningless"
        )


def _fresh(out: Any) -> Any:
    """Copies of a plan's output buffer(s): the plan reuses them at its next run."""
    return [o.copy() for o in out] if type(out) is list else out.copy()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class InferenceModel:
    """A network (and, for tabular files, its preprocessing and labels) compiled into plans.

    ``forward(x)``: numeric input (N, *input_shape) -> network output (N, *output_shape).
    ``predict(X)`` / ``predict_proba(X)``: see the module docstring. One plan per batch size
    is built on first use and reused; calls from several threads at once are safe (a call
    that finds the plans busy runs on a plan of its own). At batch 1, a plan that is one
    compiled chain call (an fp32 or int8 Dense MLP) is served by a runner bound at load
    (:mod:`.onecall`): input check, chain and a fresh output in one call from Python.
    """

    def __init__(
        self,
        manifest: dict,
        arrays: dict[str, np.ndarray],
        *,
        threads: int | None = None,
        sparse: str = "auto",
        max_plans: int = 8,
        limits: Any = None,
        summary: Summary | None = None,
    ) -> None:
        """``summary``: :func:`.validate.validate`'s summary of ``manifest`` with arrays of
        these names, dtypes and shapes under ``limits``, when the caller has it (``load``
        does: ``read_lnn``'s check computed it); else the manifest is validated here."""
        if sparse not in SPARSE_MODES:
            raise ValueError(f"sparse={sparse!r}; choose one of {SPARSE_MODES}")
        _budget.check_threads(threads)
        if summary is None:  # types, shapes, budget, tabular parts
            summary = validate(manifest, arrays, limits)
        kind = summary.kind
        self.kind: str = kind
        self.manifest = manifest
        self.network: Network = parse_network(
            manifest.get("model"), arrays, sparse=sparse, limits=limits, walked=summary.layers
        )
        self._lock = threading.Lock()
        self._stale = False  # set_num_threads was called: re-plan (threads_changed)
        self.threads = threads  # None: follow the process setting
        self.sparse = sparse
        self.max_plans = max(1, int(max_plans))
        self._plans: dict[int, Plan] = {}
        net = self.network
        self._dtype = net.dtype
        self._all_finite = kernels().all_finite  # one compiled pass over the input
        self._gate = kernels().input_rows  # type, dtype, shape, layout and inf/NaN: one call
        self._copy = kernels().fresh_copy  # the output handed back: one allocation + memcpy
        self._typenum = np.dtype(self._dtype).num
        self._hot: tuple = (None, None)  # (key, plan) of the last plan_for: the most recent
        self._in = net.input_shape
        self._flat = net.flat_input if net.flat_input != net.input_shape else None
        self._many_in = len(net.inputs) > 1
        self.preprocessing: Preprocessing | None = None
        self.task: str | None = None
        self.classes: np.ndarray | None = None
        self.threshold = 0.5
        self.target_scale = (0.0, 1.0)
        self.calibration = summary.extra.get("calibration")  # runtime/calibration.py
        self._probabilities = summary.extra.get(
            "probabilities", summary.final_activation in ("sigmoid", "softmax")
        )
        if kind == "tabular":
            self._init_tabular(manifest, summary.extra.get("preprocessing"))
        self._fast: tuple | None = None  # the batch-1 runner (runtime/onecall.py)
        self._fast_predict: tuple | None = None  # the same for predict (not tabular files)
        try:  # bind the batch-1 plan now: checks that everything fits, and warms up
            self._bind_fast()
        except (TypeError, ValueError, IndexError, MemoryError) as exc:
            raise ModelFormatError(f"the network cannot be planned: {exc!r}") from exc

    def _bind_fast(self) -> None:
        """The batch-1 plan, and its one-call runner when it is one compiled chain call."""
        plan = self.plan_for(1)
        fast = None if self._many_in else runner_for(plan, self._in)
        self._fast = fast
        self._fast_predict = fast if self.kind != "tabular" else None

    @property
    def threads(self) -> int:
        """The threads the plans split work over. Setting an int pins it; None follows
        ``lepton_nn.set_num_threads`` from the next call on. A change re-plans (every cached
        plan is dropped, the batch-1 plan and its runner are bound again at once)."""
        if self._stale:
            with self._lock:
                self._refresh()
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        value = _budget.check_threads(value)
        with self._lock:
            _budget.follow(self, value is None)  # told by set_num_threads, or no longer
            self._stale = False
            self._replan(_budget.get_num_threads() if value is None else value)

    def _replan(self, n: int) -> None:
        """Plans for ``n`` threads from now on (the caller holds the lock): the cached ones
        dropped if the count changed; the batch-1 plan and its runner bound again."""
        if n != getattr(self, "_threads", None):
            self._threads = n
            if hasattr(self, "_plans"):  # (set once in __init__ before any plan)
                self._plans.clear()
        if hasattr(self, "_plans"):
            self._hot = (None, None)
            self._bind_fast()

    def threads_changed(self) -> None:
        """Called by ``lepton_nn.set_num_threads`` (models that follow it, see
        :func:`lepton_nn.backend.threads.follow`), on its caller's thread: the batch-1
        runner and the last plan are let go, so the next call goes through :meth:`plan_for`,
        which re-plans (calls running now finish on the plans they hold). Stale is marked
        last: a re-plan that sees it comes after the runner was let go."""
        self._fast = self._fast_predict = None
        self._hot = (None, None)
        self._stale = True

    def _refresh(self) -> None:
        """The re-plan that threads_changed asked for (the caller holds the lock)."""
        if self._stale:
            self._stale = False
            self._replan(_budget.get_num_threads())

    # -- construction ------------------------------------------------------------------------
    def _init_tabular(self, manifest: dict, parsed: Preprocessing | None) -> None:
        """``parsed``: the validator's parse of ``manifest["preprocessing"]``."""
        from .tabular_meta import init_tabular  # only tabular files need it (cold start)

        init_tabular(self, manifest, parsed)

    # -- input ---------------------------------------------------------------------------------
    def _check_many(self, x: Any) -> tuple:
        """The inputs of a network of several: a dict by name, or a list/tuple in order."""
        names = [n for n, _ in self.network.inputs]
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            extra = sorted(set(x) - set(names))
            if missing or extra:
                raise LeptonError(f"inputs {names}: missing {missing}, unknown {extra}")
            x = [x[n] for n in names]
        if not isinstance(x, (list, tuple)) or len(x) != len(names):
            raise LeptonError(
                f"this network takes {len(names)} inputs {names}: a dict by name or a list"
            )
        xs = tuple(
            self._check(v, shape, f"input {name!r}")
            for v, name, shape in zip(x, names, self.network.input_shapes)
        )
        if len({v.shape[0] for v in xs}) != 1:
            raise ShapeError(f"inputs {names} have different batch sizes {[len(v) for v in xs]}")
        return xs

    def _check(self, x: Any, shape: tuple | None = None, what: str | None = None) -> np.ndarray:
        """``x`` as a C-contiguous array of the network's dtype and input shape."""
        if not (type(x) is np.ndarray and x.dtype == self._dtype):
            if x is None or isinstance(x, dict):
                raise DataError(
                    f"model input must be a numeric array or nested lists, got {type(x).__name__}"
                )
            try:
                x = np.asarray(x)
            except ValueError as exc:  # ragged nested lists
                raise DataError(f"model input is not a rectangular array: {exc}") from None
            if x.dtype.kind not in "biuf":
                raise DataError(
                    f"model input must be numeric, got an array of dtype {x.dtype}"
                    + ("; pass raw rows to predict()" if self.preprocessing is not None else "")
                )
            x = x.astype(self._dtype)
        shape = self._in if shape is None else shape
        if x.shape[1:] != shape or x.ndim != len(shape) + 1:
            first = what or (self.network.steps[0].label if self.network.steps else "the input")
            one = "; one sample? add the batch axis: x[None]" if x.shape == shape else ""
            raise ShapeError(
                f"{first}: expected input of shape (batch, {', '.join(map(str, shape))}), "
                f"got {x.shape}{one}"
            )
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if self._flat is not None and what is None:
            x = x.reshape(x.shape[0], *self._flat)
        return x

    # -- running ---------------------------------------------------------------------------------
    def plan_for(self, n: int, lengths: bool = False) -> Plan:
        """The cached plan for batch size ``n`` (built now if needed); ``lengths``: the plan
        for sequences with lengths."""
        if self._stale:  # set_num_threads was called (threads_changed): re-plan first
            self._refresh()
        key: Any = (n, "lengths") if lengths else n
        plan = self._plans.pop(key, None)
        if plan is None:
            plan = self.network.plan(n, self._threads, self.sparse, lengths)
            if len(self._plans) >= self.max_plans:  # drop the least recently used
                del self._plans[next(iter(self._plans))]
        self._plans[key] = plan  # the most recently used last
        self._hot = (key, plan)
        return plan

    def forward(self, x: Any, lengths: Any = None) -> Any:
        """The network's output for numeric input ``x`` (N, *input_shape); a fresh array.
        A graph network of several inputs takes a dict by input name or a list in order;
        one of several outputs returns a list of arrays in order.

        ``lengths`` (N,) ints in [0, T]: the real steps of each sequence of a padded batch,
        for networks with recurrent layers. Every recurrent layer then runs as if called with
        ``lengths=``: past a sequence's end its state is kept and its outputs are 0, and the
        reverse direction starts at the sequence's own last step.
        """
        fast = self._fast
        if fast is not None and lengths is None:  # the batch-1 runner (runtime/onecall.py)
            out = fast[0](fast[1], x)
            if type(out) is not int:
                return out
        if self._many_in:
            return self._forward_many(x, lengths)
        # inf/NaN are refused in every precision alike (int8 would quantize them into finite
        # scores): one pass, exact, no floating-point warnings (a dot with zeros was faster
        # but warns on inf; a sum can overflow). An array exactly as the plan reads it is
        # checked in one compiled call (the gate); anything else is converted first.
        n = self._gate(x, self._typenum, self._in) if self._flat is None else -1
        if n == -1:
            x = self._check(x)
            n = x.shape[0]
            if not self._all_finite(x):
                n = -2
        if n == -2:
            _refuse_non_finite(x)
        if lengths is not None:
            lengths = self._check_lengths(lengths, n)
        if self._lock.acquire(False):
            try:
                key, plan = self._hot
                if key != n or lengths is not None:  # else: already the most recently used
                    plan = self.plan_for(n, lengths is not None)
                one = plan.single
                if one is None:
                    return _fresh(plan.run(x, lengths))
                one[0](x, *one[1])  # the plan is one call: plan.run's loop, unrolled
                out = plan.out
                return self._copy(out) if type(out) is not list else _fresh(out)
            finally:
                self._lock.release()
        plan = self.network.plan(n, self._threads, self.sparse, lengths is not None)
        return _fresh(plan.run(x, lengths))

    def _forward_many(self, x: Any, lengths: Any) -> Any:
        xs = self._check_many(x)
        n = xs[0].shape[0]
        if lengths is not None:
            lengths = self._check_lengths(lengths, n)
        with self._lock:
            return _fresh(self.plan_for(n, lengths is not None).run(xs, lengths))

    def plan_info(self, n: int = 1) -> dict:
        """The plan for batch size ``n``: its steps, and its memory: ``peak_bytes`` (the
        intermediate buffers, each reused once its last reader is done), ``requested_bytes``
        (the same buffers without reuse), ``buffers`` (blocks allocated), ``weight_bytes``
        (the arrays the steps hold: weights and the copies some kernels read, such as W^T at
        batch 1, packed panels and Winograd filters; see :func:`held_bytes`). Scratch a step
        keeps to itself (im2col columns, recurrent states) is not counted."""
        with self._lock:
            plan = self.plan_for(n)
        info = {"batch": n, "steps": len(self.network.steps), **plan.memory}
        info["weight_bytes"] = self._weight_bytes()
        return info

    def _weight_bytes(self) -> int:
        return held_bytes(self.network.steps)

    def _check_lengths(self, lengths: Any, n: int) -> np.ndarray:
        t = self.network.steps_in_time
        if t is None:
            raise LeptonError("lengths: this network has no recurrent layer to apply them to")
        a = np.asarray(lengths)
        if a.shape != (n,) or a.dtype.kind not in "iu":
            raise ShapeError(
                f"lengths must be {n} ints (one per sequence), got {a.dtype} {a.shape}"
            )
        if n and (a.min() < 0 or a.max() > t):
            raise ValueError(f"lengths must lie in [0, {t}], got {a.min()}..{a.max()}")
        return a.astype(np.int64)

    def transform(self, rows: Any) -> np.ndarray:
        """Raw rows -> network input (tabular files); numeric arrays pass through otherwise."""
        if self.preprocessing is None:
            return rows
        return self.preprocessing.transform(rows)

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Network files: ``model(x)``'s values (``lengths``: see :meth:`forward`). Tabular
        files: labels (regression: values)."""
        fast = self._fast_predict
        if fast is not None and lengths is None:  # the batch-1 runner: one call, or -1/-2
            out = fast[0](fast[1], X)
            if type(out) is not int:
                return out
        if self.kind != "tabular":
            return self.forward(X, lengths)
        if lengths is not None:
            raise LeptonError("lengths apply to sequence networks, not to tabular files")
        out = self.forward(self.transform(X))
        if self.task == "regression":
            mu, sd = self.target_scale
            out = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
            return out.astype(np.float64) * sd + mu
        proba = self._proba(out)
        if self.task == "binary":
            codes = (proba[:, 1] >= self.threshold).astype(np.intp)
        else:
            codes = proba.argmax(axis=1)
        return self.classes[codes] if self.classes is not None else codes

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Class probabilities (N, C), columns in the order of ``classes``.

        For a bare network this is its output when its last activation is a sigmoid or
        softmax; other networks have no probabilities to give. ``lengths``: see
        :meth:`forward`.
        """
        if self.kind != "tabular":
            if not self._probabilities:
                raise LeptonError(
                    "predict_proba: the network's output is not a probability (its last "
                    f"activation is {self.network.final_activation!r}); use predict()"
                )
            return self.forward(X, lengths)
        if lengths is not None:
            raise LeptonError("lengths apply to sequence networks, not to tabular files")
        if self.task == "regression":
            raise DataError("predict_proba is for classification; use predict")
        return self._proba(self.forward(self.transform(X)))

    def _proba(self, out: np.ndarray) -> np.ndarray:
        out = out.reshape(out.shape[0], math.prod(out.shape[1:]))
        if self.calibration is not None:
            return self.calibration.of_outputs(out, self._probabilities)
        if out.shape[1] == 1:
            z = out[:, 0].astype(np.float64)
            p = z if self._probabilities else 1.0 / (1.0 + np.exp(-z))
            return np.stack([1 - p, p], axis=1)
        return out if self._probabilities else _softmax(out)

    def stream(self, max_streams: int = 10_000, idle_seconds: float | None = None):
        """A :class:`~lepton_nn.runtime.stream.StreamSession`: recurrent networks served one
        time step per call for many keyed streams, each carrying its state."""
        from .stream import StreamSession

        return StreamSession(self, max_streams=max_streams, idle_seconds=idle_seconds)

    # -- whole tables (scoring at scale) ------------------------------------------------------
    def predict_columns(self, rows: Any) -> dict[str, np.ndarray]:
        """Tabular files: ``{"prediction": labels or values, "p_<class>": probabilities...}``
        for raw rows, with one transform and one forward pass."""
        if self.kind != "tabular":
            raise LeptonError("predict_columns reads raw rows: it needs a tabular model file")
        out = self.forward(self.transform(rows))
        if self.task == "regression":
            mu, sd = self.target_scale
            return {"prediction": out.reshape(len(out), -1)[:, 0].astype(np.float64) * sd + mu}
        proba = self._proba(out)
        if self.task == "binary":
            codes = (proba[:, 1] >= self.threshold).astype(np.intp)
        else:
            codes = proba.argmax(axis=1)
        classes = self.classes if self.classes is not None else np.arange(proba.shape[1])
        cols = {"prediction": classes[codes]}
        cols.update({f"p_{c}": proba[:, k] for k, c in enumerate(classes.tolist())})
        return cols

    def predict_frame(self, df: Any, key_columns: Any = ()) -> Any:
        """A DataFrame like ``df`` (same type and index) of its ``key_columns``, then
        :meth:`predict_columns`; made with ``type(df)``, so pandas is never imported here
        (``dask_df.map_partitions(model.predict_frame)`` and Spark's ``mapInPandas`` fit)."""
        keys = {
            c: df[c].to_numpy()
            for c in ([key_columns] if isinstance(key_columns, str) else key_columns)
        }
        return type(df)({**keys, **self.predict_columns(df)}, index=df.index)

    # -- information -------------------------------------------------------------------------
    @property
    def input_shape(self) -> Any:
        """``(None, *shape)``; a list of them for a network of several inputs."""
        shapes = [(None, *s) for s in self.network.input_shapes]
        return shapes if self._many_in else shapes[0]

    @property
    def output_shape(self) -> Any:
        """``(None, *shape)``; a list of them for a network of several outputs."""
        shapes = [(None, *s) for _, s in self.network.outputs]
        return shapes if len(shapes) > 1 else shapes[0]

    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self.network.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.network.outputs]

    def describe(self) -> str:
        """One line per step: kernel, shapes and (for sparse-capable layers) what was picked."""
        lines = [f"InferenceModel ({self.kind}), input {self.input_shape}, {self._dtype}"]
        if len(self.network.chains) > 1:  # a graph: each chain with what it reads
            for c in self.network.chains:
                lines.append(f"  {c.out} <- {', '.join(c.inputs)}")
                lines += [f"    {s.describe()}" for s in c.steps]
        else:
            lines += [f"  {s}" for s in self.network.describe()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"InferenceModel(kind={self.kind!r}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape}, steps={len(self.network.steps)})"
        )


def held_bytes(steps) -> int:
    """Bytes of the distinct arrays ``steps`` hold: their attributes, through tuples, lists,
    dicts, records (``Int8Weight``) and nested steps (a chain's ``parts``, an int8 recurrent
    layer's products), caches such as ``_packed`` and ``_winograd`` included. A view counts as
    the array it views, once however many views of it there are."""
    seen: set[int] = set()
    roots: dict[int, int] = {}
    todo = list(steps)
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, np.ndarray):
            while isinstance(v.base, np.ndarray):
                v = v.base
            roots[id(v)] = v.nbytes
        elif isinstance(v, (tuple, list)):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, Record):
            todo.extend(getattr(v, f, None) for f in v._fields)
        elif type(v).__module__.startswith(_STEP_MODULES) and hasattr(v, "__dict__"):
            todo.extend(vars(v).values())
    return sum(roots.values())


_STEP_MODULES = "lepton_nn.runtime.steps"  # steps.py, steps_conv.py, ... (no plan, no arena)
