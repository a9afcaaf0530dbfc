"""Graph (functional) models: nn.Input / nn.Model, merge layers, files and the runtime's DAG plans.

Three models: a residual MLP, a residual CNN block (Conv -> BN -> ReLU -> Conv -> BN, added to
its input), and a two-input / two-output model with a shared layer. Each is checked for
gradients (float64 gradcheck through the graph), agreement with the same network in PyTorch
(outputs, gradients, parameters after training), the save/load round trip, and the runtime's
output (float32 and float64) against the nn model.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.runtime as rt
from lepton_nn import losses, nn, optim
from lepton_nn.autograd import Tensor, gradcheck
from lepton_nn.errors import LeptonError, ModelFormatError, ShapeError
from lepton_nn.runtime.format import read_lnn, write_lnn
from lepton_nn.runtime.graph import Arena
from lepton_nn.train import Trainer

RNG = np.random.default_rng(0)


# -- the three models ------------------------------------------------------------------------


def residual_mlp(seed=0, width=12):
    ln.set_seed(seed)
    x = nn.Input((6,), name="x")
    h = nn.Dense(width, "relu", name="stem")(x)
    r = nn.Dense(width, "tanh", name="r1")(h)
    r = nn.Dense(width, name="r2")(r)
    h = nn.Add(name="skip")([h, r])
    h = nn.ReLU(name="post")(h)
    return nn.Model(x, nn.Dense(3, name="head")(h), name="resmlp")


def residual_cnn(seed=0, c=3):
    ln.set_seed(seed)
    x = nn.Input((c, 6, 5), name="img")
    h = nn.Conv2D(4, 3, padding="same", name="c1")(x)
    h = nn.BatchNorm(name="bn1")(h)
    h = nn.ReLU(name="relu1")(h)
    h = nn.Conv2D(c, 3, padding="same", name="c2")(h)
    h = nn.BatchNorm(name="bn2")(h)
    h = nn.Add(name="skip")([x, h])
    h = nn.ReLU(name="relu2")(h)
    h = nn.MaxPool2D(2, name="pool")(h)
    h = nn.GlobalAvgPool2D(name="gap")(h)
    return nn.Model(x, nn.Dense(2, name="head")(h), name="rescnn")


def two_by_two(seed=0):
    """a (5,), b (4,) -> [class scores (3,), value (1,)]; layer 'shared' is called twice."""
    ln.set_seed(seed)
    a, b = nn.Input((5,), name="a"), nn.Input((4,), name="b")
    shared = nn.Dense(6, "tanh", name="shared")
    ha = shared(a)
    hb = shared(nn.Dense(5, name="proj")(b))
    joined = nn.Concatenate(name="cat")([ha, hb])
    gate = nn.Multiply(name="gate")([ha, nn.Dense(6, "sigmoid", name="g")(hb)])
    scores = nn.Dense(3, "softmax", name="cls")(joined)
    value = nn.Dense(1, name="val")(nn.Subtract(name="diff")([gate, hb]))
    return nn.Model([a, b], [scores, value], name="two")


def inputs_for(model, n=7, seed=1):
    r = np.random.default_rng(seed)
    arrays = [r.standard_normal((n, *s[1:])) for s in _shapes(model.input_shape)]
    return arrays[0] if len(arrays) == 1 else arrays


def _shapes(s):
    return s if isinstance(s[0], tuple) else [s]


def _flat(out):
    outs = out if isinstance(out, list) else [out]
    return ln.concat([o.reshape(o.shape[0], -1) for o in outs], axis=1)


MODELS = {"mlp": residual_mlp, "cnn": residual_cnn, "two": two_by_two}


# -- building, calling, inspecting -------------------------------------------------------------


def test_graph_structure_and_shared_layer():
    m = two_by_two()
    assert m.input_names == ["a", "b"] and m.output_names == ["cls", "val"]
    assert m.input_shape == [(None, 5), (None, 4)]
    assert m.output_shape == [(None, 3), (None, 1)]
    shared = m.get_layer("shared")
    assert [n for n, layer, _ in m.nodes() if layer == "shared"] == ["shared", "shared@1"]
    # the shared layer's weights appear once among the parameters
    assert sum(p is shared.weight for p in m.parameters()) == 1
    assert m.num_parameters() == sum(p.size for layer in m.layers for p in layer.parameters())
    xa, xb = inputs_for(m)
    by_list, by_dict = m([xa, xb]), m({"b": xb, "a": xa})
    for p, q in zip(by_list, by_dict):
        np.testing.assert_array_equal(p.data, q.data)
    # both calls of the shared layer see the same weights: changing them changes both paths
    ref = m([xa, xb])[1].data.copy()
    shared.weight.data = shared.weight.data * 0
    np.testing.assert_array_equal(m([xa, np.zeros_like(xb)])[0].data[:, :], m([xa, xb])[0].data)
    assert not np.allclose(m([xa, xb])[1].data, ref)


def test_summary_lists_every_layer():
    m = residual_cnn()
    text = m.summary(print_fn=None)
    for name in ("c1", "bn1", "skip", "gap", "head"):
        assert name in text
    assert f"Total params: {m.num_parameters():,}" in text
    # a shared layer's FLOPs count once per call: 'shared' is Dense 5->6, called twice
    two = two_by_two().summary(print_fn=None)
    assert "shared (Dense)     (None, 6)         36    120" in two
    assert "shared@1 = shared(proj)" in two


# -- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_gradcheck_through_the_graph(kind):
    """Every input and every parameter, float64, central differences."""
    model = MODELS[kind]().astype("float64")
    xs = inputs_for(model, n=3)
    xs = xs if isinstance(xs, list) else [xs]
    slots = [(m, k) for m in model.layers for k, _ in m._own_parameters()]
    originals = [getattr(m, k) for m, k in slots]
    k = len(xs)

    def fn(*args):
        for (m, key), w in zip(slots, args[k:]):
            setattr(m, key, w)
        return _flat(model(list(args[:k]) if k > 1 else args[0]))

    try:
        ins = [Tensor(x, requires_grad=True) for x in xs]
        ws = [Tensor(p.data, requires_grad=True) for p in originals]
        assert gradcheck(fn, *ins, *ws, atol=1e-6, rtol=1e-4)
    finally:
        for (m, key), p in zip(slots, originals):
            setattr(m, key, p)


# -- against PyTorch ---------------------------------------------------------------------------


try:
    import torch
except ImportError:  # pragma: no cover - CI installs torch (.ci/run)
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def torch_twin(model):
    """The same network in torch (float64), its parameters copied from ``model``'s and a
    function computing its outputs from a dict of input tensors, following ``model.nodes()``.
    """
    mods = torch.nn.ModuleDict()
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Dense":
            lin = torch.nn.Linear(layer.in_features, layer.units).double()
            with torch.no_grad():
                lin.weight.copy_(_t(layer.weight.data.T))
                lin.bias.copy_(_t(layer.bias.data))
            mods[layer.name] = lin
        elif cls == "Conv2D":
            conv = torch.nn.Conv2d(layer.weight.shape[1], layer.filters, 3, padding=1).double()
            with torch.no_grad():
                conv.weight.copy_(_t(layer.weight.data))
                conv.bias.copy_(_t(layer.bias.data))
            mods[layer.name] = conv
        elif cls == "BatchNorm":
            bn = torch.nn.BatchNorm2d(layer.weight.shape[0], eps=layer.eps).double()
            mods[layer.name] = bn
    acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "softmax": lambda z: torch.softmax(z, -1), "identity": lambda z: z}  # fmt: skip

    def run(inputs: dict):
        v = dict(inputs)
        for name, lname, ins in model.nodes():
            layer, xs = model.get_layer(lname), [v[i] for i in ins]
            cls = type(layer).__name__
            if cls in ("Dense", "Conv2D"):
                y = acts[layer.activation](mods[lname](xs[0]))
            elif cls == "BatchNorm":
                y = mods[lname](xs[0])
            elif cls == "ReLU":
                y = torch.relu(xs[0])
            elif cls == "MaxPool2D":
                y = torch.nn.functional.max_pool2d(xs[0], 2)
            elif cls == "GlobalAvgPool2D":
                y = xs[0].mean(dim=(2, 3))
            elif cls == "Add":
                y = xs[0] + xs[1]
            elif cls == "Subtract":
                y = xs[0] - xs[1]
            elif cls == "Multiply":
                y = xs[0] * xs[1]
            elif cls == "Concatenate":
                y = torch.cat(xs, dim=layer.axis)
            else:  # pragma: no cover - the twins above use only these
                raise AssertionError(cls)
            v[name] = y
        return [v[o] for o in model.output_names]

    return mods, run


def _params_pairs(model, mods):
    for layer in model.layers:
        if type(layer).__name__ in ("Dense",):
            yield layer.weight, mods[layer.name].weight, True
            yield layer.bias, mods[layer.name].bias, False
        elif type(layer).__name__ in ("Conv2D", "BatchNorm"):
            yield layer.weight, mods[layer.name].weight, False
            yield layer.bias, mods[layer.name].bias, False


def _loss_ours(model, outs, ys):
    outs = outs if isinstance(outs, list) else [outs]
    total = None
    for o, (kind, y) in zip(outs, ys):
        part = losses.cross_entropy(o, y) if kind == "ce" else losses.mse(o, y)
        total = part if total is None else total + part
    return total


def _loss_torch(outs, ys):
    total = 0
    for o, (kind, y) in zip(outs, ys):
        if kind == "ce":
            total = total + torch.nn.functional.cross_entropy(o, torch.from_numpy(y))
        else:
            total = total + torch.nn.functional.mse_loss(o, _t(y))
    return total


def _targets(kind, n, seed=3):
    r = np.random.default_rng(seed)
    if kind == "two":  # the first output is a softmax: its loss is a mse to a one-hot
        return [("mse", np.eye(3)[r.integers(0, 3, n)]), ("mse", r.standard_normal((n, 1)))]
    c = 3 if kind == "mlp" else 2
    return [("ce", r.integers(0, c, n))]


@needs_torch
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_training_agrees_with_torch(kind):
    """Same weights, same batches, Adam: outputs, gradients and weights after 4 steps."""
    model = MODELS[kind]().astype("float64")
    mods, run = torch_twin(model)
    xs = inputs_for(model, n=8)
    xs_list = xs if isinstance(xs, list) else [xs]
    ys = _targets(kind, 8)
    opt = optim.Adam(model.parameters(), lr=0.01)
    topt = torch.optim.Adam(mods.parameters(), lr=0.01)
    tin = {n: _t(x) for n, x in zip(model.input_names, xs_list)}
    for step in range(4):
        outs = model(xs)
        touts = run(tin)
        for o, t in zip(outs if isinstance(outs, list) else [outs], touts):
            np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-7, atol=1e-10)
        loss = _loss_ours(model, outs, ys)
        opt.zero_grad()
        loss.backward()
        topt.zero_grad()
        _loss_torch(touts, ys).backward()
        if step == 0:
            for p, tp, transposed in _params_pairs(model, mods):
                g = tp.grad.numpy()
                np.testing.assert_allclose(p.grad, g.T if transposed else g, rtol=1e-6, atol=1e-10)
        opt.step()
        topt.step()
    # atol: a parameter whose true gradient is 0 gets float64 rounding noise g ~ 1e-16 from
    # either engine, and Adam turns it into steps of lr * g / (|g| + eps) ~ 1e-10 of its own sign
    # (the CNN's has 3 such entries under the reference backend): 4 steps apart is ~1e-9
    for p, tp, transposed in _params_pairs(model, mods):
        w = tp.detach().numpy()
        np.testing.assert_allclose(p.data, w.T if transposed else w, rtol=1e-6, atol=1e-8)


@needs_torch
def test_fit_trains_a_graph_model_as_torch_does():
    """Trainer.fit on a graph model: full batches, no shuffle, SGD -> torch's weights."""
    model = residual_mlp().astype("float64")
    mods, run = torch_twin(model)
    x = inputs_for(model, n=16)
    y = np.random.default_rng(4).integers(0, 3, 16)
    sgd = optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, loss="cross_entropy", optimizer=sgd)
    hist = trainer.fit(x, y, epochs=5, batch_size=16, shuffle=False, verbose=0)
    topt = torch.optim.SGD(mods.parameters(), lr=0.1)
    for _ in range(5):
        topt.zero_grad()
        torch.nn.functional.cross_entropy(run({"x": _t(x)})[0], torch.from_numpy(y)).backward()
        topt.step()
    # atol: a parameter whose true gradient is 0 gets float64 rounding noise g ~ 1e-16 from
    # either engine, and Adam turns it into steps of lr * g / (|g| + eps) ~ 1e-10 of its own sign
    # (the CNN's has 3 such entries under the reference backend): 4 steps apart is ~1e-9
    for p, tp, transposed in _params_pairs(model, mods):
        w = tp.detach().numpy()
        np.testing.assert_allclose(p.data, w.T if transposed else w, rtol=1e-6, atol=1e-8)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


# -- files and the runtime -----------------------------------------------------------------------


def _trained(kind, dtype):
    """The model with nonzero biases and BatchNorm statistics (one training pass), in eval."""
    model = MODELS[kind]().astype(dtype)
    xs = inputs_for(model, n=16, seed=5)
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(2):
        loss = _loss_ours(model, model(xs), _targets(kind, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_save_load_and_runtime_match_the_model(kind, dtype, tmp_path):
    model = _trained(kind, dtype)
    path = tmp_path / "g.lnn"
    ln.save(model, path)
    back = ln.load(path)
    assert type(back) is nn.Model and back.nodes() == model.nodes()
    served = rt.load(path)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    for n in (1, 5):
        xs = inputs_for(model, n=n, seed=n)
        ref = model(xs)
        ref = [r.data for r in ref] if isinstance(ref, list) else [ref.data]
        again = back(xs)
        again = [a.data for a in again] if isinstance(again, list) else [again.data]
        got = served.predict(xs)
        got = got if isinstance(got, list) else [got]
        for r, a, g in zip(ref, again, got):
            np.testing.assert_array_equal(a, r)
            assert g.dtype == np.dtype(dtype)
            np.testing.assert_allclose(g, r, **tol)
        # a second run of the same plan (buffers reused across runs) gives the same values
        again2 = served.predict(xs)
        for g, g2 in zip(got, again2 if isinstance(again2, list) else [again2]):
            np.testing.assert_array_equal(g, g2)


def test_residual_cnn_plan_fuses_where_the_graph_allows(tmp_path):
    """bn1 and relu1 fold into c1 (single reader); bn2 folds into c2; the skip's input (the
    image) and the add's result are read by one node each, so relu2 and the pool run after
    the add but cannot fold into a convolution."""
    model = _trained("cnn", "float32")
    ln.save(model, tmp_path / "c.lnn")
    lines = rt.load(tmp_path / "c.lnn").describe()
    assert "'c1' (Conv2D) + layer 'bn1' (BatchNorm) + layer 'relu1' (ReLU)" in lines
    assert "'c2' (Conv2D) + layer 'bn2' (BatchNorm)" in lines
    assert "head <- img, bn2" in lines  # the chain from the add to the head reads both


def test_shared_intermediate_is_not_fused(tmp_path):
    """A Dense output read by two nodes keeps its own buffer: the ReLU after it is a step of
    its own, and the other reader sees the value before the ReLU."""
    ln.set_seed(0)
    x = nn.Input((4,), name="x")
    h = nn.Dense(5, name="d")(x)
    y = nn.Add(name="add")([nn.ReLU(name="r")(h), h])
    model = nn.Model(x, y).eval()
    ln.save(model, tmp_path / "s.lnn")
    served = rt.load(tmp_path / "s.lnn")
    assert "+ layer 'r'" not in served.describe()
    xs = inputs_for(model, n=4)
    np.testing.assert_allclose(served.predict(xs), model(xs).data, rtol=1e-6, atol=1e-6)


def test_buffers_are_reused_after_their_last_reader(tmp_path):
    """A chain of 8 Dense layers of 64 needs two buffers at a time, not eight (on one thread;
    a packed chain split over 2 threads, which runs its layers at once, each layer its own);
    each block with its alignment padding (Arena.footprint)."""
    ln.set_seed(0)
    x = nn.Input((64,), name="x")
    h = x
    for _ in range(8):
        h = nn.Dense(64, "tanh")(h)
    model = nn.Model(x, h)
    ln.save(model, tmp_path / "chain.lnn")
    info = rt.load(tmp_path / "chain.lnn", threads=1).plan_info(32)
    one = Arena.footprint(32 * 64 * 4)
    assert info["requested_bytes"] == 8 * one
    assert info["peak_bytes"] == 2 * one < info["requested_bytes"]
    # the same holds for the Sequential file of the same chain
    seq = nn.Sequential([nn.Dense(64, "tanh") for _ in range(8)]).build((None, 64))
    ln.save(seq, tmp_path / "seq.lnn")
    assert rt.load(tmp_path / "seq.lnn", threads=1).plan_info(32)["peak_bytes"] == 2 * one
    two = rt.load(tmp_path / "seq.lnn", threads=2)
    two.plan_info(31)
    if two.network.steps[0].panels is not None:  # the packed chain: by columns (31), rows (32)
        for m in (31, 32):
            info = two.plan_info(m)
            assert info["peak_bytes"] == 8 * Arena.footprint(m * 64 * 4) == info["requested_bytes"]
    else:
        assert two.plan_info(31)["peak_bytes"] == Arena.footprint(31 * 64 * 4) * 2


def test_skip_connection_keeps_its_buffer_alive(tmp_path):
    """x -> d1 -> d2 -> d3, add(d1, d3): d1's buffer is held until the add, so the chain needs
    three buffers; the result still equals the model's."""
    ln.set_seed(0)
    x = nn.Input((16,), name="x")
    h1 = nn.Dense(16, "relu")(x)
    h3 = nn.Dense(16)(nn.Dense(16, "relu")(h1))
    model = nn.Model(x, nn.Dense(2)(nn.Add()([h1, h3])))
    ln.save(model, tmp_path / "k.lnn")
    served = rt.load(tmp_path / "k.lnn")
    one = Arena.footprint(4 * 16 * 4)
    info = served.plan_info(4)
    assert info["peak_bytes"] == 3 * one, info
    xs = inputs_for(model, n=4)
    np.testing.assert_allclose(served.predict(xs), model(xs).data, rtol=1e-6, atol=1e-6)


def test_runtime_inputs_by_name_list_and_errors(tmp_path):
    model = _trained("two", "float32")
    ln.save(model, tmp_path / "t.lnn")
    served = rt.load(tmp_path / "t.lnn")
    assert served.input_names == ["a", "b"] and served.output_names == ["cls", "val"]
    assert served.input_shape == [(None, 5), (None, 4)]
    xa, xb = inputs_for(model, n=3)
    for p, q in zip(served.predict([xa, xb]), served.predict({"b": xb, "a": xa})):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(LeptonError, match="missing \\['b'\\]"):
        served.predict({"a": xa})
    with pytest.raises(ShapeError, match="input 'b'"):
        served.predict([xa, xa])
    with pytest.raises(ShapeError, match="batch sizes"):
        served.predict([xa, xb[:2]])


# -- errors ------------------------------------------------------------------------------------


def test_add_shape_mismatch_names_the_layer_and_both_shapes():
    x = nn.Input((4,), name="x")
    with pytest.raises(ShapeError, match=r"'bad_add' \(Add\).*\(1, 4\).*\(1, 5\)"):
        nn.Add(name="bad_add")([nn.Dense(4)(x), nn.Dense(5)(x)])
    with pytest.raises(ShapeError, match=r"'bad_cat' \(Concatenate\)"):
        nn.Concatenate(axis=1, name="bad_cat")([nn.Input((2, 3)), nn.Input((2, 4))])


def test_outputs_must_depend_on_the_inputs():
    a, b = nn.Input((3,), name="in_a"), nn.Input((3,), name="in_b")
    y = nn.Dense(2)(b)
    with pytest.raises(LeptonError, match="depend on input 'in_b'"):
        nn.Model(a, y)
    with pytest.raises(LeptonError, match="no output of the model depends on its input 'in_a'"):
        nn.Model([a, b], y)
    with pytest.raises(LeptonError, match="is an input"):
        nn.Model(a, a)


def test_missing_input_at_call_time():
    m = two_by_two()
    xa, _ = inputs_for(m)
    with pytest.raises(LeptonError, match="missing \\['b'\\]"):
        m({"a": xa})
    with pytest.raises(LeptonError, match="takes 2 input"):
        m(xa)


def test_merge_needs_a_list_and_layers_one_input():
    x = nn.Input((3,))
    with pytest.raises(LeptonError, match="list of two or more"):
        nn.Add()(x)
    with pytest.raises(LeptonError, match="one input"):
        nn.Dense(2)([x, x])


def _manifest(tmp_path, model):
    ln.save(model, tmp_path / "m.lnn")
    manifest, arrays = read_lnn(tmp_path / "m.lnn")
    header = ("format", "format_version", "arrays", "digest")
    return {k: v for k, v in manifest.items() if k not in header}, arrays


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["nodes"].reverse(), "only inputs and earlier nodes"),
        (lambda c: c["nodes"][0].update(layer="nope"), "unknown layer"),
        (lambda c: c["outputs"].append("ghost"), "unknown nodes"),
        (lambda c: c["nodes"][1].update(name="x"), "used twice"),
        (lambda c: c["inputs"][0].update(shape=[None, 7]), "Dense|in_features|expected"),
    ],
)
def test_hostile_graph_files_are_refused_by_both_loaders(tmp_path, edit, match):
    manifest, arrays = _manifest(tmp_path, residual_mlp())
    edit(manifest["model"]["architecture"]["config"])
    manifest["model"]["input_shape"] = None
    bad = tmp_path / "bad.lnn"
    write_lnn(bad, manifest, arrays)
    with pytest.raises(ModelFormatError, match=match):
        ln.load(bad)
    with pytest.raises(ModelFormatError, match=match):
        rt.load(bad)


def test_runtime_refuses_a_mismatched_add_in_a_file(tmp_path):
    manifest, arrays = _manifest(tmp_path, residual_mlp())
    cfg = manifest["model"]["architecture"]["config"]
    add = next(n for n in cfg["nodes"] if n["layer"] == "skip")
    add["inputs"] = ["x", "r2"]  # (6,) + (12,)
    manifest["model"]["input_shape"] = None
    write_lnn(tmp_path / "bad.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match=r"'skip' \(Add\).*\(6,\).*\(12,\)"):
        rt.load(tmp_path / "bad.lnn")


def test_cli_info_reports_the_plan_memory(tmp_path, capsys):
    from lepton_nn.cli import main

    ln.save(_trained("two", "float32"), tmp_path / "t.lnn")
    assert main(["info", str(tmp_path / "t.lnn")]) == 0
    out = capsys.readouterr().out
    served = rt.load(tmp_path / "t.lnn")
    m = served.plan_info(64)
    assert f"batch 64: {m['steps']} steps, activation memory {m['peak_bytes']:,} bytes" in out


def _serve_and_compare(model, tmp_path, n=4):
    ln.save(model, tmp_path / "e.lnn")
    served = rt.load(tmp_path / "e.lnn")
    xs = inputs_for(model, n=n)
    ref = model.eval()(xs)
    got = served.predict(xs)
    for r, g in zip(
        ref if isinstance(ref, list) else [ref], got if isinstance(got, list) else [got]
    ):
        np.testing.assert_allclose(g, r.data, rtol=1e-5, atol=1e-6)
    return served


def test_dropout_node_and_nested_sequential(tmp_path):
    """A node with nothing to run at inference (Dropout) reads through to its input; a
    Sequential used as one layer of a graph keeps its parameter names."""
    ln.set_seed(1)
    x = nn.Input((6,), name="x")
    h = nn.Dense(6, "relu", name="d")(x)
    block = nn.Sequential([nn.Dense(8, "tanh"), nn.Dense(6)], name="block")
    y = nn.Add(name="add")([nn.Dropout(0.5, name="drop")(h), block(h), h])
    model = nn.Model(x, y)
    served = _serve_and_compare(model, tmp_path)
    lines = served.describe()
    assert "add <- d, block, d" in lines  # the dropout read through to d
    assert "layer 'block' (Sequential): layer 'dense" in lines  # inner layers named
    back = ln.load(tmp_path / "e.lnn")
    assert isinstance(back.get_layer("block"), nn.Sequential)


def test_an_output_read_by_another_node_is_not_overwritten(tmp_path):
    """outputs [h, relu(h)]: the ReLU must not run in h's buffer, nor fold into its Dense."""
    ln.set_seed(2)
    x = nn.Input((5,), name="x")
    h = nn.Dense(5, name="d")(x)
    model = nn.Model(x, [h, nn.ReLU(name="r")(h)])
    served = _serve_and_compare(model, tmp_path)
    h_out, r_out = served.predict(inputs_for(model, n=4))
    assert (h_out < 0).any() and (r_out >= 0).all()


def test_flatten_inside_a_graph(tmp_path):
    """Conv features flattened in one branch and pooled in the other, concatenated."""
    ln.set_seed(3)
    x = nn.Input((2, 5, 4), name="img")
    c = nn.Conv2D(3, 3, padding="same", activation="relu", name="c")(x)
    flat = nn.Flatten(name="flat")(c)
    pooled = nn.GlobalAvgPool2D(name="gap")(c)
    y = nn.Dense(2, name="head")(nn.Concatenate(name="cat")([flat, pooled]))
    _serve_and_compare(nn.Model(x, y), tmp_path, n=3)


def test_broadcasting_channel_gate(tmp_path):
    """x (C, H, W) * gate (C, 1, 1): a squeeze-and-excitation style Multiply."""
    ln.set_seed(4)
    x = nn.Input((3, 4, 4), name="img")
    g = nn.Input((3, 1, 1), name="gate")
    y = nn.Flatten()(nn.Multiply(name="mul")([x, g]))
    model = nn.Model([x, g], nn.Dense(2)(y))
    _serve_and_compare(model, tmp_path)


def test_merges_reading_the_model_inputs_directly(tmp_path):
    """Concatenate / Subtract / Average / Maximum of the inputs themselves: the plan reads
    its own copy of an input it cannot pass as a first argument."""
    ln.set_seed(5)
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="b")
    cat = nn.Concatenate(name="cat")([a, b])
    parts = [nn.Subtract()([a, b]), nn.Average()([a, b, a]), nn.Maximum()([b, a])]
    y = nn.Dense(2)(nn.Concatenate()([cat, *parts]))
    model = nn.Model([a, b], [y, cat])
    _serve_and_compare(model, tmp_path)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_int8_graph_model_is_served_as_quantized(kind, mode, tmp_path):
    """quantize() takes a graph model; the runtime serves its file with the int8 steps and
    gives exactly what the QuantizedModel gives, close to the float model."""
    from lepton_nn.compress import quantize, save_compressed

    model = _trained(kind, "float32")
    x = inputs_for(model, n=32, seed=9).astype(np.float32)
    q = quantize(model, x, mode=mode)
    save_compressed(q, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    got = served.predict(x)
    np.testing.assert_array_equal(got, np.asarray(getattr(q(x), "data", q(x))))
    ref = model(x).data
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert "int8" in served.describe()


def test_forward_hooks_on_the_model_and_on_a_shared_layer():
    m = two_by_two()
    seen_model, seen_shared = [], []
    m.register_forward_hook(lambda mod, args, out: seen_model.append(len(out)))
    m.get_layer("shared").register_forward_hook(
        lambda mod, args, out: seen_shared.append(out.shape)
    )
    m(inputs_for(m, n=2))
    assert seen_model == [2] and seen_shared == [(2, 6), (2, 6)]


@needs_torch
def test_conv_and_its_pool_run_fused_in_a_graph(monkeypatch):
    """Conv2D -> MaxPool2D with no other reader runs as one op (call_fused), as in
    Sequential; outputs and gradients still equal torch's."""
    ln.set_seed(6)
    x = nn.Input((2, 6, 6), name="img")
    c = nn.Conv2D(3, 3, padding="same", activation="relu", name="conv")(x)
    p = nn.MaxPool2D(2, name="pool")(c)
    y = nn.Dense(2, name="head")(nn.GlobalAvgPool2D(name="gap")(p))
    model = nn.Model(x, y).astype("float64")
    calls = []
    conv = model.get_layer("conv")
    real = conv.call_fused
    monkeypatch.setattr(conv, "call_fused", lambda *a: calls.append(1) or real(*a))
    mods, run = torch_twin(model)
    xs = inputs_for(model, n=3)
    out = model(xs)
    ref = run({"img": _t(xs)})[0]
    assert calls == [1]
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(conv.weight.grad, mods["conv"].weight.grad.numpy(), rtol=1e-9)


def test_merge_computes_in_its_second_input_when_the_first_is_the_model_input(tmp_path):
    """y = Dense(Subtract([x, Dense(x)])): x - h is written into h's buffer (its last
    reader) since x, the model's input, may not be written: one (N, 16) buffer, one (N, 2)."""
    ln.set_seed(7)
    x = nn.Input((16,), name="x")
    h = nn.Dense(16, "tanh", name="d")(x)
    model = nn.Model(x, nn.Dense(2, name="out")(nn.Subtract(name="sub")([x, h])))
    served = _serve_and_compare(model, tmp_path, n=8)
    info = served.plan_info(8)
    assert info["peak_bytes"] == Arena.footprint(8 * 16 * 4) + Arena.footprint(8 * 2 * 4), info
