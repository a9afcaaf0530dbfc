"""lepton_nn network -> ONNX: ``export(model_or_lnn_path, path, ...)``.

The network's manifest section (what ``lepton_nn.save`` writes: one source of truth for the
architecture, whether the network is in memory or in a file) is written layer by layer as
standard ONNX operators::

    Dense          Gemm (2-D input) or MatMul + Add, then its activation
    Conv2D         Conv (explicit pads; "same" as the pads it computes), activation; int8:
                   QuantizeLinear -> DequantizeLinear on its input, DequantizeLinear of
                   the int8 weight (QDQ, :mod:`.quantized`)
    MaxPool2D      MaxPool            AvgPool2D    AveragePool (count_include_pad)
    GlobalAvgPool2D GlobalAveragePool + Flatten    Flatten      Flatten(axis=1)
    Permute        Transpose(perm=[0, *dims])
    BatchNorm      BatchNormalization LayerNorm    LayerNormalization(axis=-1)
    Embedding      Gather(table, ids) (the input is then int64)        Dropout: nothing
    LSTM/GRU/SimpleRNN  Transpose to (T, N, F), LSTM/GRU/RNN (gates reordered, see
                   :mod:`.recurrent`), then Y -> (N, T, D U) or Y_h -> (N, D U)
    gelu           Gelu(approximate="tanh") from opset 20, else its tanh formula

The result passes ``onnx.checker.check_model(full_check=True)`` and is written atomically.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from lepton_nn.backend.geometry import same_padding
from lepton_nn.errors import LeptonError, ModelFormatError
from lepton_nn.runtime.format_write import _temp_beside

from .reader import _onnx

__all__ = ["export", "manifest_to_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
_ACTS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_GATES = {"LSTM": (4, [0, 3, 1, 2], "LSTM"), "GRU": (3, [0, 1, 2], "GRU"),
          "SimpleRNN": (1, [0], "RNN")}  # fmt: skip


def export(model_or_path: Any, path: Any, example_input: Any = None, opset: int | None = None,
           dynamic_batch: bool = True):  # fmt: skip
    """Write ``model_or_path`` (a lepton_nn network, a compressed model, a ``TabularModel``,
    or an ``.lnn`` file of any of them) to ``path`` as ONNX and return the ``ModelProto``.

    ``example_input``: builds a network never called yet, and fixes the batch size when
    ``dynamic_batch=False`` (else the batch dimension is the symbolic ``N``). ``opset``:
    the ai.onnx opset (default 17; 20 and up write GELU as one ``Gelu`` node). A tabular
    model takes its raw columns and gives ``label`` and ``probabilities`` (:mod:`.tabular`).
    """
    manifest, arrays = _manifest(model_or_path, example_input)
    opset = opset or DEFAULT_OPSET
    if manifest.get("kind") == "tabular":
        from .tabular import tabular_to_onnx

        proto = tabular_to_onnx(manifest, arrays, opset)
    else:
        batch = None
        if not dynamic_batch:
            batch = int(np.shape(example_input)[0]) if example_input is not None else 1
        proto = manifest_to_onnx(manifest["model"], arrays, opset, batch)
    _write(proto, path)
    return proto


def _manifest(obj: Any, example_input: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and arrays of a file (checked by the one validator) or an object."""
    if isinstance(obj, (str, os.PathLike, bytes)):
        from lepton_nn.runtime.format import read_lnn
        from lepton_nn.runtime.validate import validate

        manifest, arrays = read_lnn(obj)
        validate(manifest, arrays)
    elif hasattr(obj, "to_lnn"):  # a compressed or tabular model
        manifest, arrays = obj.to_lnn()
    else:
        from lepton_nn.io import module_to_lnn

        if getattr(obj, "input_shape", None) is None and example_input is not None:
            obj(np.asarray(example_input))
        section, arrays = module_to_lnn(obj)
        manifest = {"kind": "module", "model": section}
    if manifest.get("kind") not in ("module", "compressed", "tabular"):
        raise LeptonError(f"export: a {manifest.get('kind')!r} model cannot be exported")
    return manifest, arrays


def _write(proto, path: Any) -> None:
    data = proto.SerializeToString()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _temp_beside(path, folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Graph:
    """Nodes and initializers being written, and fresh value names."""

    def __init__(self, params: dict[str, np.ndarray], dtype: np.dtype, opset: int) -> None:
        self.onnx = _onnx()
        self.params, self.dtype, self.opset = params, dtype, opset
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.added: set[str] = set()
        self.int8: dict = {}  # param name -> Int8Weight (compressed networks)

    def init(self, name: str, value: np.ndarray) -> str:
        arr = np.array(value, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def param(self, name: str) -> str:
        if name not in self.added:  # a layer called by several nodes: its weights once
            self.added.add(name)
            self.init(name, self.params[name].astype(self.dtype))
        return name

    def const(self, value, dtype=None) -> str:
        self.count += 1
        return self.init(f"const_{self.count}", np.asarray(value, dtype or self.dtype))

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> Any:
        self.count += 1
        outs = [f"{op.lower()}_{self.count}" + (f"_{i}" if i else "") for i in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def activation(self, x: str, act: str, **kw) -> str:
        """Nodes of activation ``act`` on ``x`` (``kw``: its parameters, else defaults)."""
        if act in ("identity", None):
            return x
        if act in _ACTS:
            return self.node(_ACTS[act], [x])
        if act in ("softmax", "log_softmax"):
            return self.node("Softmax" if act == "softmax" else "LogSoftmax", [x], axis=-1)
        if act in _PARAM_ACTS:
            op, names = _PARAM_ACTS[act]
            return self.node(op, [x], **{k: float(kw[k]) for k in names if kw.get(k) is not None})
        if act in ("relu6", "clip"):
            lo, hi = (0.0, 6.0) if act == "relu6" else (kw.get("min"), kw.get("max"))
            ins = [x, self.const(lo) if lo is not None else "", self.const(hi) if hi is not None
                   else ""]  # fmt: skip
            return self.node("Clip", ins[: 3 if hi is not None else 2])
        if act == "mish":
            if self.opset >= 18:
                return self.node("Mish", [x])
            return self.node("Mul", [x, self.node("Tanh", [self.node("Softplus", [x])])])
        if act in ("gelu", "gelu_erf"):
            return self._gelu(x, "tanh" if act == "gelu" else "none")
        raise LeptonError(f"export: activation {act!r} has no ONNX form here yet")

    def _gelu(self, x: str, approximate: str) -> str:
        if self.opset >= 20:
            return self.node("Gelu", [x], approximate=approximate)
        half = self.node("Mul", [x, self.const(0.5)])
        if approximate == "none":  # x/2 (1 + erf(x / sqrt 2))
            e = self.node("Erf", [self.node("Mul", [x, self.const(math.sqrt(0.5))])])
            return self.node("Mul", [half, self.node("Add", [e, self.const(1.0)])])
        # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = self.node("Mul", [self.node("Mul", [x, x]), x])
        inner = self.node("Add", [x, self.node("Mul", [cube, self.const(0.044715)])])
        t = self.node("Tanh", [self.node("Mul", [inner, self.const(math.sqrt(2 / math.pi))])])
        return self.node("Mul", [half, self.node("Add", [t, self.const(1.0)])])


#: activation -> (ONNX op, its attributes taken from the layer's config)
_PARAM_ACTS = {"leaky_relu": ("LeakyRelu", ["alpha"]), "elu": ("Elu", ["alpha"]),
               "selu": ("Selu", []), "hard_sigmoid": ("HardSigmoid", ["alpha", "beta"]),
               "hard_swish": ("HardSwish", []), "softplus": ("Softplus", []),
               "sign": ("Sign", [])}  # fmt: skip
#: activation layer class -> activation name
_ACT_LAYERS = {"LeakyReLU": "leaky_relu", "ELU": "elu", "SELU": "selu", "HardSigmoid":
               "hard_sigmoid", "HardSwish": "hard_swish", "Softplus": "softplus", "Mish": "mish",
               "ReLU6": "relu6", "Clip": "clip", "Sign": "sign"}  # fmt: skip


def _pads(padding: Any, size, k, s, d) -> list[int]:
    """Our padding (2-D) -> ONNX pads [top, left, bottom, right]."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        t, b, l, r = same_padding(size, k, s, d)
        return [t, l, b, r]
    p = [padding, padding] if isinstance(padding, int) else list(padding)
    if len(p) == 4:  # (top, bottom, left, right)
        return [p[0], p[2], p[1], p[3]]
    return [p[0], p[1], p[0], p[1]]


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def manifest_to_onnx(section: dict, arrays: dict, opset: int = DEFAULT_OPSET,
                     batch: int | None = None):  # fmt: skip
    """A ``kind: module`` network section (a ``Sequential`` or a graph ``Model``) and its
    arrays -> a checked ``ModelProto``."""
    h = _onnx().helper
    g = graph_for(section, arrays, opset)
    specs, outs = network_nodes(g, section)
    b = "N" if batch is None else batch
    outputs = []
    for name, x, width in outs:  # name the outputs as the network does
        g.nodes.append(h.make_node("Identity", [x], [name]))
        outputs.append(h.make_tensor_value_info(name, _tensor_type(g.dtype), [b, *width]))
    inputs = [h.make_tensor_value_info(n, _tensor_type(d), [b, *shape]) for n, shape, d in specs]
    return finish(g, inputs, outputs)


def _tensor_type(dtype) -> int:
    return _onnx().helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def graph_for(section: dict, arrays: dict, opset: int) -> _Graph:
    """An empty graph holding the section's weights (sparse ones dense, int8 ones apart)."""
    from lepton_nn.runtime.compression import CSRWeight, parse_compression

    params = {n: arrays["params/" + n] for n in section["params"]}
    int8 = {}
    for name, w in parse_compression(section, arrays).items():
        if isinstance(w, CSRWeight):  # sparse: exported dense, the same numbers
            params[name] = w.to_dense()
        else:
            int8[name] = w
    g = _Graph(params, np.dtype(section.get("dtype", "float32")), opset)
    g.int8 = int8
    return g


def network_nodes(g: _Graph, section: dict, feed: str | None = None):
    """Add the network's nodes to ``g``; -> (inputs [(name, per-sample shape, dtype)],
    outputs [(name, tensor, per-sample shape)]). ``feed``: a tensor of ``g`` to read instead
    of a ``Sequential``'s own input."""
    arch = section["architecture"]
    if arch.get("class") == "Model":
        cfg = arch["config"]
        specs = [(s["name"], list(s["shape"][1:]), s.get("dtype", g.dtype.name))
                 for s in cfg["inputs"]]  # fmt: skip
        index = {c["config"]["name"]: (i, c) for i, c in enumerate(cfg["layers"])}
        vals = {name: (name, shape) for name, shape, _ in specs}
        for node in cfg["nodes"]:
            i, lcfg = index[node["layer"]]
            srcs = [vals[n] for n in node["inputs"]]
            if lcfg["class"] in _MERGE_OPS:
                vals[node["name"]] = _merge(g, lcfg["class"], lcfg["config"], srcs)
                continue
            x, width = srcs[0]
            for prefix, cls, c in _leaves(lcfg, f"layers.{i}."):
                x, width = _layer(g, prefix, cls, c, x, width)
            vals[node["name"]] = (x, width)
        return specs, [(name, *vals[name]) for name in cfg["outputs"]]
    x, width = feed or "input", list(section["input_shape"][1:])
    leaves = list(_leaves(arch, ""))
    first_ids = bool(leaves) and leaves[0][1] == "Embedding"
    specs = [("input", list(width), "int64" if first_ids else g.dtype.name)]
    for prefix, cls, c in leaves:
        x, width = _layer(g, prefix, cls, c, x, width)
    return specs, [("output", x, width)]


def finish(g: _Graph, inputs: list, outputs: list, ml: bool = False):
    """The checked model of graph ``g`` (``ml``: it uses ai.onnx.ml operators too)."""
    onnx = _onnx()
    h = onnx.helper
    graph = h.make_graph(g.nodes, "lepton_nn", inputs, outputs, g.inits)
    ops = [h.make_opsetid("", g.opset)] + ([h.make_opsetid("ai.onnx.ml", 2)] if ml else [])
    model = h.make_model(graph, opset_imports=ops, producer_name="lepton_nn",
                         ir_version=h.find_min_ir_version_for(ops, True))  # fmt: skip
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - a bug here
        raise ModelFormatError(f"export: the written graph does not check: {exc}") from exc
    return model


def _leaves(cfg: dict, prefix: str):
    """(parameter prefix, class, config) of each layer, nested Sequentials flattened."""
    if cfg.get("class") == "Sequential":
        for i, sub in enumerate(cfg.get("config", {}).get("layers", [])):
            yield from _leaves(sub, f"{prefix}layers.{i}.")
    else:
        yield prefix, cfg["class"], cfg.get("config", {})


_MERGE_OPS = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max",
              "Average": "Mean", "Concatenate": "Concat"}  # fmt: skip


def _merge(g: _Graph, cls: str, cfg: dict, srcs: list) -> tuple[str, list[int]]:
    """A merge layer on values ``srcs`` [(tensor, per-sample shape)]."""
    names = [x for x, _ in srcs]
    if cls == "Concatenate":
        rank = len(srcs[0][1]) + 1
        axis = cfg.get("axis", -1) % rank
        width = list(srcs[0][1])
        width[axis - 1] = sum(w[axis - 1] for _, w in srcs)
        return g.node("Concat", names, axis=axis), width
    width = list(np.broadcast_shapes(*(tuple(w) for _, w in srcs)))
    op = _MERGE_OPS[cls]
    if op in ("Add", "Mul"):  # binary in ONNX: a chain
        y = names[0]
        for other in names[1:]:
            y = g.node(op, [y, other])
        return y, width
    return g.node(op, names), width


def _layer(g: _Graph, p: str, cls: str, cfg: dict, x: str, width: list[int]):
    """Nodes of one layer on ``x`` (per-sample shape ``width``) -> (output, its width)."""
    if any(k.startswith(p) for k in g.int8) and cls not in ("Dense", "Conv2D"):
        raise LeptonError(
            f"export: an int8 {cls} cannot be exported yet (int8 Dense and Conv2D only)"
        )
    if cls == "Dense" and p + "weight" in g.int8:
        from .quantized import int8_dense

        b = g.param(p + "bias") if cfg.get("use_bias", True) else None
        y = int8_dense(g, x, g.int8[p + "weight"], b)
        return g.activation(y, cfg.get("activation")), [*width[:-1], cfg["units"]]
    if cls == "Dense":
        w = g.param(p + "weight")
        b = g.param(p + "bias") if cfg.get("use_bias", True) else None
        if len(width) == 1:
            y = g.node("Gemm", [x, w] + ([b] if b else []))
        else:
            y = g.node("MatMul", [x, w])
            y = g.node("Add", [y, b]) if b else y
        return g.activation(y, cfg.get("activation")), [*width[:-1], cfg["units"]]
    if cls in ("Activation", "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax"):
        act = cfg.get("activation") or cls.lower()
        if cls == "GELU" and cfg.get("approximate") == "none":
            act = "gelu_erf"
        return g.activation(x, act), width
    if cls in _ACT_LAYERS:
        return g.activation(x, _ACT_LAYERS[cls], **cfg), width
    if cls in ("QuantizeDequantize", "QuantizeDequantizeRows"):
        from .qdq import export_qdq

        return export_qdq(g, x, cls, cfg), width
    if cls in ("Pad1D", "Pad2D"):
        amounts = cfg["padding"]  # [[before, after]] per trailing axis, as get_config writes
        k = len(amounts)
        pads = [0, 0] + [a for a, _ in amounts] + [0, 0] + [b for _, b in amounts]
        mode = {"replicate": "edge"}.get(cfg.get("mode", "constant"), cfg.get("mode", "constant"))
        ins = [x, g.const(pads, np.int64)]
        if mode == "constant":
            ins.append(g.const(cfg.get("value", 0.0)))
        width = width[: len(width) - k] + [n + a + b for n, (a, b) in zip(width[-k:], amounts)]
        return g.node("Pad", ins, mode=mode), width
    if cls == "Conv1D":
        c, length = width
        k, s, d = (int(cfg.get(n, 1)) for n in ("kernel_size", "stride", "dilation"))
        pad = cfg.get("padding", "valid")
        if pad == "same":
            _, _, lft, rgt = same_padding((1, length), (1, k), (1, s), (1, d))
        else:
            lft, rgt = (0, 0) if pad == "valid" else (pad, pad) if isinstance(pad, int) else pad
        ins = [x, g.param(p + "weight")] + ([g.param(p + "bias")] if cfg.get("use_bias", True)
                                             else [])  # fmt: skip
        y = g.node("Conv", ins, kernel_shape=[k], strides=[s], dilations=[d], pads=[lft, rgt],
                   group=int(cfg.get("groups", 1)))  # fmt: skip
        ol = (length + lft + rgt - d * (k - 1) - 1) // s + 1
        return g.activation(y, cfg.get("activation")), [cfg["filters"], ol]
    if cls in ("Dropout",):
        return x, width
    if cls == "Flatten":
        return g.node("Flatten", [x], axis=1), [math.prod(width)]
    if cls == "Permute":
        dims = list(cfg["dims"])
        return g.node("Transpose", [x], perm=[0, *dims]), [width[d - 1] for d in dims]
    if cls == "Conv2D":
        c, h, w_ = width
        k, s, d = (_pair(cfg.get(n, 1)) for n in ("kernel_size", "stride", "dilation"))
        pads = _pads(cfg.get("padding", "valid"), (h, w_), k, s, d)
        if p + "weight" in g.int8:  # QDQ: the input's grid, the int8 weight dequantized
            from .quantized import int8_conv_inputs

            ins = int8_conv_inputs(g, x, g.int8[p + "weight"])
        else:
            ins = [x, g.param(p + "weight")]
        if cfg.get("use_bias", True):
            ins.append(g.param(p + "bias"))
        y = g.node("Conv", ins, kernel_shape=k, strides=s, dilations=d, pads=pads,
                   group=int(cfg.get("groups", 1)))  # fmt: skip
        oh = (h + pads[0] + pads[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        ow = (w_ + pads[1] + pads[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        return g.activation(y, cfg.get("activation")), [cfg["filters"], oh, ow]
    if cls in ("MaxPool2D", "AvgPool2D"):
        c, h, w_ = width
        k = _pair(cfg.get("pool_size", 2))
        s = _pair(cfg.get("stride") or k)
        pads = _pads(cfg.get("padding", "valid"), (h, w_), k, s, (1, 1))
        attrs: dict = {"kernel_shape": k, "strides": s, "pads": pads}
        if cls == "AvgPool2D":
            attrs["count_include_pad"] = int(cfg.get("count_include_pad", True))
        y = g.node("MaxPool" if cls == "MaxPool2D" else "AveragePool", [x], **attrs)
        oh = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
        ow = (w_ + pads[1] + pads[3] - k[1]) // s[1] + 1
        return y, [c, oh, ow]
    if cls == "GlobalAvgPool2D":
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1), [width[0]]
    if cls == "BatchNorm":
        ins = [x] + [g.param(p + n) for n in ("weight", "bias", "running_mean", "running_var")]
        return g.node("BatchNormalization", ins, epsilon=float(cfg.get("eps", 1e-5))), width
    if cls == "LayerNorm":
        if g.opset < 17:
            raise LeptonError("export: LayerNorm needs opset 17 or later")
        ins = [x, g.param(p + "weight"), g.param(p + "bias")]
        return g.node("LayerNormalization", ins, axis=-1, epsilon=float(cfg.get("eps", 1e-5))), \
            width  # fmt: skip
    if cls == "Embedding":
        ids = g.node("Cast", [x], to=_onnx().TensorProto.INT64)
        return g.node("Gather", [g.param(p + "weight"), ids], axis=0), [*width, cfg["output_dim"]]
    if cls in _GATES:
        return _recurrent(g, p, cls, cfg, x, width)
    raise LeptonError(f"export: layer class {cls!r} has no ONNX form yet")


def _recurrent(g: _Graph, p: str, cls: str, cfg: dict, x: str, width: list[int]):
    if cfg.get("return_state"):
        raise LeptonError(f"export: {cls} with return_state cannot be exported")
    gates, order, op = _GATES[cls]
    t, f = width
    u = cfg["units"]
    dirs = ("", "_reverse") if cfg.get("bidirectional") else ("",)
    ws, rs, bs = [], [], []
    for d in dirs:
        w_ih, w_hh = g.params[f"{p}weight_ih{d}"], g.params[f"{p}weight_hh{d}"]
        blocks = lambda a: np.concatenate([a[:, k * u : (k + 1) * u] for k in order], 1)  # noqa: E731
        ws.append(blocks(w_ih).T)
        rs.append(blocks(w_hh).T)
        zero = np.zeros(gates * u, g.dtype)
        if cfg.get("use_bias", True):
            b = g.params[f"{p}bias{d}"]
            bh = g.params[f"{p}bias_hh{d}"] if cls == "GRU" else zero
            bs.append(np.concatenate([blocks(b[None])[0], blocks(bh[None])[0]]))
        else:
            bs.append(np.concatenate([zero, zero]))
    name = p.rstrip(".").replace(".", "_") or "rnn"
    ins = [g.node("Transpose", [x], perm=[1, 0, 2])]
    for k, v in (("W", ws), ("R", rs), ("B", bs)):  # once per layer, however often called
        if f"{name}_{k}" not in g.added:
            g.added.add(f"{name}_{k}")
            g.init(f"{name}_{k}", np.stack(v).astype(g.dtype))
        ins.append(f"{name}_{k}")
    attrs: dict = {"hidden_size": u, "direction": "bidirectional" if len(dirs) == 2 else "forward"}
    if cls == "GRU":
        attrs["linear_before_reset"] = 1
    y, y_h = g.node(op, ins, 2, **attrs)[:2]
    if cfg.get("return_sequences"):  # Y (T, D, N, U) -> (N, T, D U)
        y = g.node("Transpose", [y], perm=[2, 0, 1, 3])
        shape = g.const([0, 0, -1], np.int64)
        return g.node("Reshape", [y, shape]), [t, u * len(dirs)]
    y = g.node("Transpose", [y_h], perm=[1, 0, 2])  # Y_h (D, N, U) -> (N, D U)
    return g.node("Reshape", [y, g.const([0, -1], np.int64)]), [u * len(dirs)]
