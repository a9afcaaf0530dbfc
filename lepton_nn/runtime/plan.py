"""Forward-only execution plans: a network section -> a flat list of bound kernel calls.

At load, :func:`parse_network` checks the architecture and the arrays of a network section
(an untrusted file) and turns each layer into a *step* holding its weights in the form its
kernel wants (fp32, packed int8 or CSR), fusing an activation layer into the linear layer
before it. For each batch size N, :meth:`Network.plan` binds the steps into a :class:`Plan`:
every intermediate buffer allocated once, every call a ``(function, args)`` pair::

    Dense (fp32)     dense_packed_forward(h, (P,), (b,), (act,), (z,), threads)  # z = f(h W + b)
                     (compiled: W kept only as its column panels P = dense_pack(W); one call
                     for a run of Dense layers, any batch, split over the native pool's
                     threads. Without the extension: np.matmul(h, W, z) then
                     bias_act_forward(z, b, act, z); at batch 1 np.dot(h, Wt.T, z), Wt = W^T
                     in C order, a faster gemv)
    Dense (int8)     quantize_rows(h, q, s, zp[, True]);  qlinear(q, s, zp, Wp, sw, cs, b, act, z)
                     (True: static activations, s and zp fixed at calibration; up to 4 rows,
                     compiled: qdense_chain_forward(h, chain, (z,)), the same in one call,
                     a run of int8 Dense layers joined into one)
    Conv2D (int8)    qconv2d_forward_chunks(h, ...): per image, quantized once, unfolded
                     channels last, one int8 GEMM with bias and activation fused (few taps on
                     AVX2 and up: summed tap by tap, exactly, in float), written to (N, F, OH, OW)
                     or through a folded max pool; images spread over the threads
    Dense (sparse)   sparse_chain_forward(h, chain, (z,))   (csrc/sparse_chain.h: a run of
                     sparse layers joined into one call, each layer's columns cut into tasks
                     of equal nonzeros on the native pool, a barrier between layers)
    activation       bias_act_forward(h, None, act, h)      (or fused into the layer above)
    softmax          max, subtract, exp, sum, divide along the last axis, in place
    Dropout          nothing (inference);   Flatten: a reshaped view of the buffer
    Conv2D, pooling, BatchNorm, LayerNorm, LSTM/GRU/SimpleRNN: :mod:`.steps_conv`,
                     :mod:`.steps`, :mod:`.steps_recurrent`, made by :mod:`.parsers`
                     (float Conv2D layers one after the other, each with its BatchNorm,
                     activation and max pool folded in: one conv2d_direct_chain call, each
                     thread carrying the images it claims through all of them)

so that running a plan is one loop over the list: no graph, no autograd, no checks (the only
check is :class:`~lepton_nn.runtime.InferenceModel`'s input check; the CSR structure, checked
at load and when a sparse chain is prepared, is not scanned per call). A layer whose weight has
a stored CSR form, or is at most half nonzero, is run sparse or dense by *measurement*: the
first plan for a batch size times both kernels on that layer's shapes and keeps the faster.

Every parallel region (a Dense chain, conv chunks or images, int8 columns, recurrent row
ranges) is one compiled call that splits its work over the process's native pool
(``kernels/csrc/pool.h``) in C; a plan with such calls starts with the pool's ``wake()``.

Imports: NumPy, :mod:`lepton_nn.backend` (never Numba), :mod:`lepton_nn.errors` and the
compiled extension, nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_nn.backend.activations import EXTRA_ACTIVATIONS
from lepton_nn.backend.reference import ACT_CODE
from lepton_nn.backend.threads import get_num_threads, native_pool_wake
from lepton_nn.errors import LeptonError, ModelFormatError

from .aliasing import check_threaded_aliasing
from .compression import CSRWeight, Int8Weight, csr_arrays, parse_compression
from .graph import Arena, Chain, Plan, bind_chains, contract, parse_graph
from .kernels import kernels
from .parsers import PARSERS, activation_name, gelu_name, step_types, steps_of
from .record import Record
from .shapes import walk_layers
from .steps import PARALLEL_MIN_ROWS, AffineStep, Int8DenseStep, blas_in_threads, on_pool
from .steps_dense import (
    ActivationStep,
    DenseStep,
    FlattenStep,
    Op,
    SoftmaxStep,
    SparseDenseStep,
    Step,
    _Ctx,
)
from .validate import validate_network

__all__ = ["Network", "Plan", "parse_network", "SPARSE_MAX_DENSITY", "PARALLEL_MIN_ROWS"]

#: A float weight at most this dense is a candidate for the sparse kernel (then measured).
SPARSE_MAX_DENSITY = 0.5
#: Layers of one joined ``sparse_chain_forward`` call (csrc/sparse_chain.h's SPC_MAXL).
SPARSE_CHAIN_MAX = 16
_FIXED = {
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
}
_FLOAT_DTYPES = ("float32", "float64")


_DENSE_CALLS = ("dense_chain_forward", "dense_packed_forward")


def _dense_runs(ops: list[Op]) -> list[list[int]]:
    """The indices of ``ops`` as runs that :func:`_join_dense_chains` joins: adjacent
    ``dense_chain_forward`` (or ``dense_packed_forward``) calls, each reading the previous
    one's output (a run of one index per other op)."""
    runs: list[list[int]] = []
    for i, (fn, args) in enumerate(ops):
        prev = ops[i - 1] if i else None
        if (
            prev is not None
            and getattr(fn, "__name__", "") in _DENSE_CALLS
            and prev[0] is fn
            and args[0] is prev[1][4][-1]
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _join_dense_chains(ops: list[Op]) -> list[Op]:
    """Each run of :func:`_dense_runs` as one call over all its layers (the same
    computations in the same order; a packed chain on the most threads any of its layers was
    given)."""
    out: list[Op] = []
    for run in _dense_runs(ops):
        fn, args = ops[run[0]]
        for i in run[1:]:
            x, ws, bs, acts, outs, *threads = args
            more = ops[i][1]
            args = (x, ws + more[1], bs + more[2], acts + more[3], outs + more[4],
                    *(max(t, u) for t, u in zip(threads, more[5:])))  # fmt: skip
        out.append((fn, args))
    return out


def _held_reads(ops: list[Op], origin: list[int]) -> dict[int, int]:
    """``{step k: step e}`` for :func:`~.graph.bind_chains`: for each run of packed calls
    that will be one threaded call, the values its steps read stay live until its last step
    is bound, so that the chain's input and outputs are all disjoint (``origin``: the step
    each op came from).

    A threaded packed chain runs its layers at once (csrc/dense_packed.h): from 16 rows a
    thread (LNN_PK_ROWS) each thread's groups of rows through every layer; up to 3 rows each
    layer's columns as soon as the columns of the previous layer they read are done. Both
    need the input and every output disjoint (``lnn_pk_disjoint``; else the kernel waits for
    whole layers, as it does anyway in between), so no output may take the block of a value
    that is dead layer after layer."""
    keep: dict[int, int] = {}
    for run in _dense_runs(ops):
        fn = ops[run[0]][0]
        threads = max((ops[i][1][5] for i in run if len(ops[i][1]) > 5), default=1)
        if len(run) > 1 and getattr(fn, "__name__", "") == "dense_packed_forward" and threads > 1:
            keep.update((origin[i], origin[run[-1]]) for i in run[:-1])
    return keep


def _join_chains(ops: list[Op], name: str, prepare, max_layers: int | None = None) -> list[Op]:
    """Adjacent ``name`` calls (a chain kernel: ``(x, chain, outs)``), each reading the
    previous one's output, as one call over all their layers, prepared again by
    ``prepare(first, specs, threads)``: the same computations in the same order, every output
    still written, on the most threads any of them was given; at most ``max_layers`` layers a
    call."""
    out: list[Op] = []
    for fn, args in ops:
        prev = out[-1] if out else None
        if (
            prev is not None
            and getattr(fn, "__name__", "") == name
            and prev[0] == fn  # == : a twin's kernel is a bound method, made anew at each lookup
            and args[0] is prev[1][2][-1]
            and (max_layers is None or len(prev[1][1].specs) + len(args[1].specs) <= max_layers)
        ):
            x, first, outs = prev[1]
            threads = max(first.threads, args[1].threads)
            chain = prepare(first, first.specs + args[1].specs, threads)
            out[-1] = (fn, (x, chain, outs + args[2]))
        else:
            out.append((fn, args))
    return out


def _join_sparse_chains(ops: list[Op]) -> list[Op]:
    """Adjacent sparse chains as one (up to SPARSE_CHAIN_MAX layers, a barrier between
    layers)."""
    k = kernels()
    return _join_chains(
        ops,
        "sparse_chain_forward",
        lambda first, specs, threads: k.sparse_chain_prepare(specs, first.k, threads),
        SPARSE_CHAIN_MAX,
    )


def _join_int8_chains(ops: list[Op]) -> list[Op]:
    """Adjacent int8 Dense chains as one."""
    k = kernels()
    return _join_chains(
        ops,
        "qdense_chain_forward",
        lambda first, specs, threads: k.qdense_chain_prepare(specs, first.m, first.k, threads),
    )


# --------------------------------------------------------------------------- plans


def _lengths_mask(lengths: np.ndarray, mask: np.ndarray) -> None:
    """mask (T, N) = 1 at the steps t < lengths[n], else 0."""
    np.less(np.arange(mask.shape[0])[:, None], lengths[None, :], out=mask, casting="unsafe")


class Network(Record):
    """A parsed network: its inputs ``(name, per-sample shape the plan reads)``, chains of
    steps in topological order (:mod:`.graph`), outputs ``(name, per-sample shape)``;
    ``input_shapes``: per input, as the caller gives it."""

    _fields = ("inputs", "chains", "outputs", "dtype", "input_shapes", "final_activation")

    def __init__(
        self, inputs: list[tuple[str, tuple[int, ...]]], chains: list[Chain],
        outputs: list[tuple[str, tuple[int, ...]]], dtype: np.dtype,
        input_shapes: list[tuple[int, ...]], final_activation: str,
    ) -> None:  # fmt: skip
        self.inputs, self.chains, self.outputs, self.dtype = inputs, chains, outputs, dtype
        self.input_shapes, self.final_activation = input_shapes, final_activation

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_shapes[0]

    @property
    def flat_input(self) -> tuple[int, ...]:
        """The shape the first step reads of the (first) input (after a leading Flatten)."""
        return self.inputs[0][1]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.outputs[0][1]

    @property
    def steps(self) -> list[Step]:
        return [s for c in self.chains for s in c.steps]

    @property
    def steps_in_time(self) -> int | None:
        """The time steps T of the network's recurrent layers (None without any)."""
        recurrent = step_types("steps_recurrent", "RecurrentStep")
        ts = {s.t for s in self.steps if isinstance(s, recurrent)}
        return ts.pop() if len(ts) == 1 else None

    def plan(self, n: int, threads: int = 1, sparse: str = "auto", lengths: bool = False) -> Plan:
        """Bind every step for batch size ``n``; ``lengths``: for sequences of given lengths
        (every recurrent layer then runs as if called with them)."""
        ctx = _Ctx(n, threads, sparse, self.dtype, pool=Arena())
        ops: list[Op] = []
        held = None
        if lengths:
            t = self.steps_in_time
            if t is None:
                raise LeptonError("lengths apply to a network with recurrent layers")
            held, ctx.mask = np.zeros(n, np.int64), np.zeros((t, n), self.dtype)
            ops.append((_lengths_mask, (held, ctx.mask)))
        # bind against real arrays of the inputs' shapes; the Plan swaps markers in for them
        firsts = {name: np.zeros((n, *shape), self.dtype) for name, shape in self.inputs}
        names = [o for o, _ in self.outputs]
        bound, outs, origin = bind_chains(self.chains, firsts, names, ctx)
        keep = _held_reads(bound, origin)
        if keep:  # bound again: the arena plans around the threaded chains' buffers
            ctx.pool = Arena()
            bound, outs, _ = bind_chains(self.chains, firsts, names, ctx, keep)
        ops += _join_sparse_chains(_join_int8_chains(_join_dense_chains(bound)))
        check_threaded_aliasing(ops)
        # chunk kernels calling BLAS from the native pool's threads: hold BLAS to one thread
        # meanwhile (its own workers would spin on the cores the pool's need); only then, as
        # holding costs ~10-60 us a call in ctypes calls to OpenBLAS
        hold = threads > 1 and any(blas_in_threads(op) for op in ops)
        # the pool's workers may be asleep (their cores halted): wake them as the run starts,
        # so that they are back by its first parallel region (a plan that starts with one
        # wakes them as early itself: its job's post does)
        wake = native_pool_wake()
        if wake is not None and ops and not on_pool(ops[0]) and any(map(on_pool, ops)):
            ops.insert(0, (wake, ()))
        pool = ctx.pool
        memory = {"peak_bytes": pool.peak_bytes, "requested_bytes": pool.requested_bytes,
                  "buffers": len(pool.blocks)}  # fmt: skip
        many = len(self.outputs) > 1
        return Plan(n, ops, outs, list(firsts.values()), hold, held, memory, many)

    def describe(self) -> list[str]:
        return [s.describe() for s in self.steps]


# --------------------------------------------------------------------------- parsing


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(msg)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(f"{what} must be a positive int, got {value!r}")
    return value


class _Params:
    """The float params of a section and its compressed weights, each taken at most once."""

    def __init__(self, section: dict, arrays: dict, prefix: str = "params/") -> None:
        names = section.get("params", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _fail("params must be a list of names")
        missing = [n for n in names if prefix + n not in arrays]
        if missing:
            raise _fail(f"arrays missing for parameters {missing[:5]}")
        self.float = {n: arrays[prefix + n] for n in names}
        self.compressed = parse_compression(section, arrays)
        for n in self.compressed:
            if n in self.float:
                raise _fail(f"parameter {n!r} is stored both in float and compressed")
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype, label: str) -> Any:
        """The float array (checked shape, cast to ``dtype``) or compressed weight ``name``."""
        self.used.add(name)
        if name in self.compressed:
            w = self.compressed[name]
            if w.shape != shape:
                raise _fail(f"{label}: compressed {name} has shape {w.shape}, expected {shape}")
            return w
        if name not in self.float:
            raise _fail(f"{label}: parameter {name!r} is not in the file")
        a = self.float[name]
        if a.dtype.name not in _FLOAT_DTYPES or a.shape != shape:
            raise _fail(f"{label}: parameter {name} is {a.dtype} {a.shape}, expected {shape}")
        return np.ascontiguousarray(a, dtype=dtype)

    def check_all_used(self) -> None:
        extra = (set(self.float) | set(self.compressed)) - self.used
        if extra:
            raise _fail(f"the file holds parameters no layer uses: {sorted(extra)[:5]}")


def _dense(
    prefix: str, config: dict, width: tuple[int, ...], params: _Params, dtype: np.dtype,
    label: str, sparse: str,
) -> tuple[Step, str]:  # fmt: skip
    units = _int(config.get("units"), f"{label}: units")
    act = activation_name(config.get("activation"), label)
    use_bias = config.get("use_bias", True)
    if not isinstance(use_bias, bool):
        raise _fail(f"{label}: use_bias must be true or false")
    if len(width) != 1:
        raise _fail(
            f"{label} on input of per-sample shape {width} is not supported by the runtime yet "
            "(Dense needs a flat input; add a Flatten layer)"
        )
    n_in = width[0]
    declared = config.get("in_features")
    if declared is not None and declared != n_in:
        raise _fail(f"{label}: in_features {declared!r} but its input has {n_in} features")
    w = params.take(f"{prefix}weight", (n_in, units), dtype, label)
    b = params.take(f"{prefix}bias", (units,), dtype, label) if use_bias else None
    fused = ACT_CODE.get(act, 0)
    if isinstance(w, Int8Weight):
        step: Step = Int8DenseStep(label, w, b, fused)
    elif isinstance(w, CSRWeight):
        step = SparseDenseStep(label, w.to_dense().astype(dtype), b, fused, w)
        if dtype != np.float32:
            step = DenseStep(label, step.w, b, fused)
    else:
        step = DenseStep(label, w, b, fused)
        if sparse != "dense" and dtype == np.float32 and w.size:
            density = np.count_nonzero(w) / w.size
            if density <= SPARSE_MAX_DENSITY:
                csr = _csr_of(w, prefix)
                step = SparseDenseStep(label, w, b, fused, csr)
    return step, act


def _csr_of(w: np.ndarray, prefix: str) -> CSRWeight:
    """CSR of W^T for a float weight W (K, N) found to be sparse at load."""
    indptr, indices, data = csr_arrays(w)
    return CSRWeight(prefix.rstrip("."), f"{prefix}weight", indptr, indices, data, w.shape)


def _input_shape(shape: Any, what: str) -> tuple[int, ...]:
    """A batch shape from a file, ``[null, d1, ...]``, as the per-sample tuple."""
    if (
        not isinstance(shape, list)
        or len(shape) < 2
        or shape[0] is not None
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])
        or math.prod(shape[1:]) > 10_000_000
    ):
        raise _fail(f"bad {what} {shape!r}")
    return tuple(shape[1:])


def parse_network(
    section: Any, arrays: dict, sparse: str = "auto", limits: Any = None, walked: Any = None
) -> Network:
    """Check a network section (``architecture``, ``input_shape``, ``dtype``, ``params``,
    optional ``compression``) against its arrays and build its steps: one chain for a
    ``Sequential`` (or single layer), a DAG of chains for a graph ``Model``
    (:mod:`lepton_nn.nn.graph` gives its form; :mod:`.graph` how it is planned).

    ``sparse``: ``"auto"`` (measure), ``"sparse"`` or ``"dense"`` for sparse-capable layers.
    ``walked``: the layers of :func:`.validate.validate_network`'s summary of this section
    with these arrays' shapes, when the caller has just computed it (not walked twice).
    Raises ``ModelFormatError`` for anything inconsistent or not supported.
    """
    if not isinstance(section, dict):
        raise _fail("model section must be an object")
    arch = section.get("architecture")
    graph = isinstance(arch, dict) and arch.get("class") == "Model"
    shape = section.get("input_shape")
    in_shape = None if graph and shape is None else _input_shape(shape, "input_shape")
    dtype_name = section.get("dtype", "float32")
    if dtype_name not in _FLOAT_DTYPES:
        raise _fail(f"model dtype {dtype_name!r} is not float32 or float64")
    dtype = np.dtype(dtype_name)
    params = _Params(section, arrays)
    if walked is None:  # the one check of the layers
        shapes = {k: (np.asarray(a).dtype.name, np.shape(a)) for k, a in arrays.items()}
        walked = validate_network(section, shapes, limits).layers
    try:
        if graph:

            def layer(i: int, cfg: dict, width: tuple, label: str):
                infos = walk_layers(cfg, width, f"layers.{i}.")  # the validator's walk
                steps, width, _, final = _parse_chain(infos, params, dtype, width, sparse, label)
                return steps, width, final

            inputs, chains, outputs = parse_graph(arch.get("config"), layer, _input_shape)
            if in_shape is not None and (len(inputs) != 1 or inputs[0][1] != in_shape):
                raise _fail(f"input_shape {shape!r} does not match the graph's inputs")
            net_inputs = list(inputs)
        else:
            steps, width, flat_input, final = _parse_chain(walked, params, dtype, in_shape, sparse)
            inputs, outputs = [("input", in_shape)], [("output", width)]
            chains = [Chain(["input"], steps, "output", final, width)]
            net_inputs = [("input", flat_input)]
    except ModelFormatError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise _fail(f"architecture and arrays do not fit together: {exc!r}") from exc
    params.check_all_used()
    names = [o for o, _ in outputs]
    chains = contract(chains, names)
    outputs = [(n, w) for n, (_, w) in zip(names, outputs)]
    for c in chains:
        c.steps = _fuse(c.steps)
    out_shape = section.get("output_shape")
    width = outputs[0][1]
    if out_shape is not None and (not isinstance(out_shape, list) or tuple(out_shape[1:]) != width):
        raise _fail(f"output_shape {out_shape!r} does not match the layers' output {width}")
    final = next((c.final for c in chains if c.out == names[0]), "identity")
    return Network(net_inputs, chains, outputs, dtype, [w for _, w in inputs], final)


def _parse_chain(
    layers: list, params: _Params, dtype: np.dtype, in_shape: tuple, sparse: str,
    node: str | None = None,
):  # fmt: skip
    """Steps, output shape, the first step's input shape and the last activation's name of
    layers applied one after the other, from the validator's walk of them
    (:func:`.validate.validate_network`: each with its input shape and the output its shape
    rule expects, which the steps must give). ``node``: the label of a graph node (whose
    input is never flattened ahead)."""
    width: tuple[int, ...] = in_shape
    flat_input = in_shape
    steps: list[Step] = []
    final = "identity"
    for info in layers:
        prefix, cls, config = info.prefix, info.cls, info.config
        label = (
            info.label if node is None else node if len(layers) == 1 else f"{node}: {info.label}"
        )
        if cls == "Dense":
            step, act = _dense(prefix, config, width, params, dtype, label, sparse)
            steps.append(step)
            width = (step.shape[1],) if isinstance(step, DenseStep) else (step.n_out,)
            steps += _unfused_activation(f"{label} {act}", act)
            final = act
        elif cls in _FIXED or cls in ("Activation", "GELU"):
            act = _FIXED.get(cls) or (
                gelu_name(config, label)
                if cls == "GELU"
                else activation_name(config.get("activation"), label)
            )
            if act in ACT_CODE and act != "identity":
                steps.append(ActivationStep(label, ACT_CODE[act]))
            steps += _unfused_activation(label, act)
            final = act if act != "identity" else final
        elif cls in PARSERS:
            new, width, act = PARSERS[cls](prefix, config, width, params, dtype, label)
            steps += new
            steps += _unfused_activation(f"{label} {act}", act)
            final = act or final
        elif cls == "Dropout":
            pass
        elif cls == "Flatten":
            flat = (math.prod(width),)
            if not steps and node is None:
                flat_input = flat
            elif flat != width:
                steps.append(FlattenStep(label, flat[0]))
            width = flat
        else:
            raise _fail(
                f"{label} is not supported by the runtime yet; "
                "load the file with lepton_nn.load() to run it through lepton_nn.nn"
            )
        if tuple(width) != info.shape.out:  # the steps and the shape rules must agree
            raise _fail(f"{label}: its steps give {width}, its shape rule {info.shape.out}")
    return steps, width, flat_input, final


def _unfused_activation(label: str, act: str | None) -> list[Step]:
    """The step of an activation that the layer's kernel does not fuse: softmax or log-softmax
    along the last axis, or an elementwise one of ``backend.activations`` (none otherwise)."""
    if act in ("softmax", "log_softmax"):
        return [SoftmaxStep(label, act == "log_softmax")]
    if act in EXTRA_ACTIVATIONS:
        return [steps_of("steps_extra").ElementwiseStep(label, act)]
    return []


def _fuse(steps: list[Step]) -> list[Step]:
    """Fold into the linear step right before it: an eval BatchNorm (into a float Dense or
    convolution's weights and bias), an activation (when that step has none), and a max pool
    (into a float or int8 convolution: pooled chunk by chunk in cache). Conv -> BatchNorm ->
    ReLU -> MaxPool becomes one step."""
    convs = step_types("steps_conv", "ConvStep", "Int8ConvStep")  # () if no conv step exists
    pools = step_types("steps_conv", "PoolStep")
    out: list[Step] = []
    for s in steps:
        prev = out[-1] if out else None
        linear = isinstance(prev, (DenseStep, Int8DenseStep, *convs))
        # nothing folded after its product yet: no activation, no pool
        bare = linear and prev.act == 0 and getattr(prev, "pool", None) is None
        if isinstance(s, AffineStep) and bare and type(prev) in (DenseStep, *convs[:1]):
            prev.fold_scale(*s.as_scale())  # float weights only (not int8, not sparse)
        elif isinstance(s, ActivationStep) and bare:
            prev.act = s.act
        elif isinstance(s, pools) and s.pool == "max" and isinstance(prev, convs) and not prev.pool:
            prev.pool = (*s.geom, *s.out_hw)
        else:
            out.append(s)
            continue
        prev.label = f"{prev.label} + {s.label}"
    return _chain_convs(out)


def _chain_convs(steps: list[Step]) -> list[Step]:
    """Runs of float 2-D convolutions one after the other as one :class:`ConvChainStep`
    (image by image through all of them, where each takes the direct kernel)."""
    types = step_types("steps_conv", "ConvStep", "ConvChainStep")
    if not types:
        return steps  # the convolution steps' module is not imported: there is none
    conv, chain = types
    out: list[Step] = []
    for s in steps:
        prev = out[-1] if out else None
        if type(s) is conv and not s.one_d:
            if isinstance(prev, chain):
                prev.parts.append(s)
                prev.label = f"{prev.label} -> {s.label}"
                continue
            if type(prev) is conv and not prev.one_d:
                out[-1] = chain([prev, s])
                continue
        out.append(s)
    return out


def default_threads() -> int:
    """Threads for large int8 batches: the engine's setting (``lepton_nn.set_num_threads``,
    else ``LEPTON_NUM_THREADS``, else the usable cores)."""
    return get_num_threads()
