"""lepton_nn.inspect: graph export, tensor and module hooks, explain_backward, Recorder,
the extended summary, and the kernel-to-twin pointers."""

from __future__ import annotations

import inspect as pyinspect

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import inspect as I
from lepton_nn.autograd import Function
from lepton_nn.errors import LeptonError
from lepton_nn.nn import Dense, Dropout, ReLU, Sequential
from lepton_nn.ops import Tensor

F32 = np.float32


def small_graph():
    """loss = sum(relu(x @ W + b)) with x (2, 3), W (3, 2), b (2,)."""
    x = Tensor(np.arange(6, dtype=F32).reshape(2, 3), name="x")
    W = Tensor(np.full((3, 2), 0.5, F32), requires_grad=True, name="W")
    b = Tensor(np.array([-1.0, 0.0], F32), requires_grad=True, name="b")
    return x, W, b, (x @ W + b).relu().sum()


# -- graph export ---------------------------------------------------------------------------


def test_mermaid_exact():
    *_, loss = small_graph()
    assert I.graph(loss).to_mermaid() == (
        "flowchart TD\n"
        '    n0("x<br/>(2, 3) float32")\n'
        '    n1("W<br/>(3, 2) float32")\n'
        '    n2["MatMul<br/>(2, 2) float32"]\n'
        '    n3("b<br/>(2,) float32")\n'
        '    n4["Add<br/>(2, 2) float32"]\n'
        '    n5["Relu<br/>(2, 2) float32"]\n'
        '    n6["Sum<br/>() float32"]\n'
        "    n0 --> n2\n"
        "    n1 --> n2\n"
        "    n2 --> n4\n"
        "    n3 --> n4\n"
        "    n4 --> n5\n"
        "    n5 --> n6\n"
    )


def test_dot_exact():
    *_, loss = small_graph()
    assert I.graph(loss).to_dot() == (
        "digraph G {\n"
        "    node [fontname=Helvetica, fontsize=10];\n"
        '    n0 [label="x\\n(2, 3) float32", shape=ellipse];\n'
        '    n1 [label="W\\n(3, 2) float32", shape=ellipse];\n'
        '    n2 [label="MatMul\\n(2, 2) float32", shape=box];\n'
        '    n3 [label="b\\n(2,) float32", shape=ellipse];\n'
        '    n4 [label="Add\\n(2, 2) float32", shape=box];\n'
        '    n5 [label="Relu\\n(2, 2) float32", shape=box];\n'
        '    n6 [label="Sum\\n() float32", shape=box];\n'
        "    n0 -> n2;\n"
        "    n1 -> n2;\n"
        "    n2 -> n4;\n"
        "    n3 -> n4;\n"
        "    n4 -> n5;\n"
        "    n5 -> n6;\n"
        "}\n"
    )


def test_grad_norms_after_backward_exact():
    # y = sum(a * b): dy/da = b (norm 5), dy/db = a (norm sqrt 5), d/d(a*b) = ones(2)
    a = Tensor(np.array([1.0, 2.0], F32), requires_grad=True, name="a")
    b = Tensor(np.array([3.0, 4.0], F32), requires_grad=True, name="b")
    g = I.graph((a * b).sum())
    assert all(n.grad_norm is None for n in g)
    g.backward()
    assert g.to_mermaid() == (
        "flowchart TD\n"
        '    n0("a<br/>(2,) float32<br/>grad norm 5")\n'
        '    n1("b<br/>(2,) float32<br/>grad norm 2.236")\n'
        '    n2["Mul<br/>(2,) float32<br/>grad norm 1.414"]\n'
        '    n3["Sum<br/>() float32<br/>grad norm 1"]\n'
        "    n0 --> n2\n"
        "    n1 --> n2\n"
        "    n2 --> n3\n"
    )
    np.testing.assert_allclose(a.grad, [3, 4])  # the real backward ran
    assert not a._hooks and not g.nodes[2].tensor._hooks  # temporary hooks removed


def test_leaf_grad_norm_without_graph_backward():
    x, W, b, loss = small_graph()
    loss.backward()
    g = I.graph(loss)
    assert g.node_of(W).grad_norm == pytest.approx(float(np.linalg.norm(W.grad)))
    assert g.node_of(x).grad_norm is None and g.nodes[-1].grad_norm is None


def test_shared_input_and_module_names():
    layer = Dense(2, "relu", in_features=3, name="d")
    x = Tensor(np.ones((4, 3), F32))
    h = layer(x)
    y = (h * h).mean()
    g = I.graph(y, params=layer)
    labels = [n.label for n in g]
    assert labels == ["const", "weight", "bias", "Linear relu", "Mul", "Mean"]
    assert [n.kind for n in g][:3] == ["const", "param", "param"]
    assert ("n3", "n4") in g.edges and g.edges.count(("n3", "n4")) == 2  # h used twice
    assert g.inputs_of(g.nodes[3]) == g.nodes[:3]
    # ids depend only on structure: the same graph again gives the same text
    assert I.graph(y, params=layer).to_dot() == g.to_dot()
    assert 'n3 [label="Linear relu\\n(4, 2) float32", shape=box];' in g.to_dot()


def test_labels_are_escaped():
    t = Tensor(np.ones(2, F32), requires_grad=True, name='a"<b>')
    g = I.graph(t.sum())
    assert '("a#quot;#lt;b#gt;<br/>' in g.to_mermaid()
    assert 'label="a\\"<b>\\n' in g.to_dot()


# -- tensor hooks ------------------------------------------------------------------------------


def test_tensor_hooks_see_the_right_gradients():
    x, W, b, loss = small_graph()
    z = x @ W + b
    seen = {}
    z.register_hook(lambda g: seen.__setitem__("z", g.copy()))
    W.register_hook(lambda g: seen.__setitem__("W", g.copy()))
    z.relu().sum().backward()
    mask = (z.data > 0).astype(F32)  # dL/dz = [z > 0]
    np.testing.assert_array_equal(seen["z"], mask)
    np.testing.assert_allclose(seen["W"], x.data.T @ mask)
    np.testing.assert_allclose(W.grad, seen["W"])


def test_hook_on_reused_tensor_sees_the_sum_once():
    a = Tensor(np.array([2.0], F32), requires_grad=True)
    h = a * 3
    calls = []
    h.register_hook(lambda g: calls.append(g.copy()))
    (h * h + h).sum().backward()  # d/dh (h^2 + h) = 2h + 1 = 13
    assert len(calls) == 1 and calls[0][0] == pytest.approx(13.0)
    assert a.grad[0] == pytest.approx(39.0)


def test_replacing_hook_changes_the_gradient_and_remove_works():
    a = Tensor(np.array([1.0, 2.0], F32), requires_grad=True)
    h = a * 2
    handle = h.register_hook(lambda g: g * 10)
    (h.sum()).backward()
    np.testing.assert_allclose(a.grad, [20, 20])  # 2 * (10 * 1)
    a.grad = None
    handle.remove()
    h.sum().backward()
    np.testing.assert_allclose(a.grad, [2, 2])
    # on a leaf: the replacement is what lands in .grad, as a copy the hook does not own
    kept = np.array([7.0, 7.0], F32)
    leaf = Tensor(np.zeros(2, F32), requires_grad=True)
    leaf.register_hook(lambda g: kept)
    (leaf * 1).sum().backward()
    np.testing.assert_array_equal(leaf.grad, kept)
    leaf.grad += 1
    np.testing.assert_array_equal(kept, [7, 7])


def test_hook_errors():
    with pytest.raises(LeptonError, match="does not require grad"):
        Tensor(np.ones(2, F32)).register_hook(lambda g: None)
    a = Tensor(np.ones(2, F32), requires_grad=True)
    (a * 2).register_hook(lambda g: np.ones(3))
    b = a * 2
    b.register_hook(lambda g: np.ones(3))
    with pytest.raises(LeptonError, match="shape"):
        b.sum().backward()


# -- module hooks -------------------------------------------------------------------------------


def test_module_forward_and_full_backward_hooks():
    ln.set_seed(0)
    first, second = Dense(4, "tanh", in_features=3), Dense(2, in_features=4)
    model = Sequential([first, second])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(F32)
    acts, grads = {}, {}
    first.register_forward_hook(lambda m, inp, out: acts.__setitem__("h", out))
    for m in (first, second):
        m.register_full_backward_hook(lambda m, gi, go: grads.__setitem__(m.name, (gi, go)))
    y = model(x)
    h = acts["h"]
    h_seen = {}
    h.register_hook(lambda g: h_seen.__setitem__("g", g.copy()))
    (y * y).sum().backward()
    gi, go = grads[second.name]
    np.testing.assert_allclose(go[0], 2 * y.data, rtol=1e-6)  # dL/dy
    np.testing.assert_allclose(gi[0], h_seen["g"], rtol=1e-6)  # dL/dh
    np.testing.assert_allclose(gi[0], go[0] @ second.weight.data.T, rtol=1e-5)
    gi1, go1 = grads[first.name]
    assert gi1 == (None,)  # raw data needs no gradient
    np.testing.assert_allclose(go1[0], h_seen["g"], rtol=1e-6)


def test_full_backward_hook_can_replace_grad_input():
    first, second = Dense(4, in_features=3), Dense(1, in_features=4)
    model = Sequential([first, second])
    handle = second.register_full_backward_hook(lambda m, gi, go: (np.zeros_like(gi[0]),))
    model(np.ones((2, 3), F32)).sum().backward()
    np.testing.assert_array_equal(first.weight.grad, 0)  # nothing reached the first layer
    assert np.abs(second.weight.grad).sum() > 0
    handle.remove()
    model.zero_grad()
    model(np.ones((2, 3), F32)).sum().backward()
    assert np.abs(first.weight.grad).sum() > 0
    with ln.no_grad():  # no recording: the hook machinery stays out of the way
        second.register_full_backward_hook(lambda *a: None)
        assert model(np.ones((2, 3), F32)).requires_grad is False


# -- explain_backward ----------------------------------------------------------------------------


def test_explain_backward_steps():
    x, W, b, loss = small_graph()
    steps = I.explain_backward(loss)
    assert [s.node.label for s in steps] == ["Sum", "Relu", "Add", "MatMul", "W", "b"]
    add = steps[2]
    assert add.words.startswith("a sum passes the gradient unchanged")
    assert add.math == "dL/da = unbroadcast(g), dL/db = unbroadcast(g)"
    assert [src.label for src, _ in add.inputs] == ["MatMul", "b"]
    assert add.inputs[1][1].shape == (2,)  # summed over the broadcast axis
    mm = steps[3]
    assert mm.inputs[0][1] is None  # x needs no gradient
    np.testing.assert_allclose(mm.inputs[1][1], W.grad)
    assert steps[4].inputs == [] and steps[4].math == ".grad += g"
    np.testing.assert_allclose(steps[4].grad, W.grad)
    text = str(steps)
    assert "step 0: n6 Sum [op] () float32" in text
    assert "  -> n0 x: no gradient needed" in text
    assert f"  g = dL/d(n5): (2, 2), norm {np.linalg.norm(steps[1].grad):.4g}" in text
    assert type(loss._ctx).backward is type(loss._ctx).__dict__["backward"]
    assert "backward" not in vars(loss._ctx)  # the wrappers are gone


def test_every_op_has_a_rule():
    """Every op has a rule: in RULES, or (ops of an upper floor, such as compress) its own
    ``rule`` attribute. Import every module that defines ops, so the answer does not depend
    on which tests ran before."""
    import lepton_nn.compress.qat  # noqa: F401  (FakeQuant)
    import lepton_nn.nn.hooks  # noqa: F401  (BackwardHook)
    import lepton_nn.ops.conv  # noqa: F401
    import lepton_nn.ops.norm  # noqa: F401
    import lepton_nn.ops.recurrent  # noqa: F401

    def subclasses(cls):
        for c in cls.__subclasses__():
            yield c
            yield from subclasses(c)

    ops = [c for c in subclasses(Function) if not c.__name__.startswith("_")]
    ops = [c for c in ops if c.__module__.startswith("lepton_nn.")]
    assert len(ops) > 30
    missing = [c.__name__ for c in ops if c.__name__ not in I.RULES and not hasattr(c, "rule")]
    assert not missing, f"ops without a rule in lepton_nn/inspect/rules.py: {missing}"


def test_rule_fallbacks():
    class Custom(Function):
        rule = ("doubles", "dL/da = 2 g")

    class Documented(Function):
        """y = a + 1: the identity gradient."""

    assert I.rule_for(Custom) == ("doubles", "dL/da = 2 g")
    assert I.rule_for(Documented()) == ("y = a + 1: the identity gradient.", "")
    assert I.rule_for(None)[1] == ".grad += g"


# -- Recorder ---------------------------------------------------------------------------------


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(F32)
    y = (X[:, 0] + X[:, 1] > 0).astype(F32).reshape(-1, 1)
    return X, y


def test_recorder_in_trainer():
    from lepton_nn.train import Trainer

    ln.set_seed(0)
    X, y = _data()
    model = Sequential(
        [Dense(8, "relu", in_features=4, name="h"), Dropout(0.1, name="drop"), Dense(1, name="out")]
    )
    rec = I.Recorder(every=2)
    trainer = Trainer(model, "bce", "adam")
    trainer.fit(X, y, epochs=2, batch_size=32, callbacks=[rec], verbose=0)
    assert rec.steps == [0, 2, 4]  # 6 batches, one in two recorded
    assert set(rec.stats) == {"h", "drop", "out"}
    h = rec["h"]
    assert all(len(v) == 3 for v in h.values())
    assert np.all((h["dead"] >= 0) & (h["dead"] < 1))
    assert np.all(h["act_std"] > 0) and np.all(h["grad_std"] > 0)
    assert np.all((h["update_ratio"] > 0) & (h["update_ratio"] < 1))
    assert np.isnan(rec["out"]["dead"]).all()  # not a ReLU layer
    assert np.isnan(rec["drop"]["update_ratio"]).all()  # no parameters
    assert not model.layers[0]._forward_hooks  # detached at the end
    text = rec.summary()
    assert text.splitlines()[0].split() == ["layer", *I.STATS]

    model.layers[0].bias.data[:] = -100.0  # every unit of h now outputs 0: dead
    rec2 = I.Recorder()
    trainer.fit(X, y, epochs=1, batch_size=32, callbacks=[rec2], verbose=0)
    np.testing.assert_array_equal(rec2["h"]["dead"], 1.0)


def test_recorder_in_plain_loop_matches_manual_stats():
    ln.set_seed(1)
    X, y = _data(32)
    layer = Dense(5, "relu", in_features=4, name="solo")
    model = Sequential([layer, Dense(1)]).build((None, 4))
    opt = ln.optim.SGD(model.parameters(), lr=0.1)
    rec = I.RecorderHooks(model).attach()
    before = layer.weight.data.copy(), layer.bias.data.copy()
    rec.on_batch_begin(0)
    out = model(X)
    act = layer(X).data  # the same weights: the same activations
    loss = ln.losses.binary_cross_entropy_with_logits(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rec.on_batch_end(0)
    rec.detach()
    s = rec["solo"]
    assert s["act_mean"][0] == pytest.approx(act.mean(), rel=1e-5)
    assert s["act_std"][0] == pytest.approx(act.std(), rel=1e-5)
    assert s["dead"][0] == pytest.approx(np.mean(act.max(axis=0) <= 0))
    after = layer.weight.data, layer.bias.data
    dw = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
    w = np.sqrt(sum(np.sum(b**2) for b in before))
    assert s["update_ratio"][0] == pytest.approx(dw / w, rel=1e-5)
    model(X)  # not between batch hooks: nothing recorded
    assert len(rec.steps) == 1


def test_recorder_plot_and_history_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from lepton_nn.train import Trainer

    X, y = _data()
    model = Sequential([Dense(6, "relu", in_features=4), ReLU(), Dense(1)])
    rec = I.Recorder()
    hist = Trainer(model, "bce", "adam").fit(
        X, y, epochs=2, batch_size=48, callbacks=[rec], validation_split=0.25, verbose=0
    )
    p = rec.plot(tmp_path / "stats.png")
    assert p and (tmp_path / "stats.png").stat().st_size > 1000
    p = I.plot_history(hist, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


# -- summary -----------------------------------------------------------------------------------


def test_summary_flops_sparsity_and_quant():
    model = Sequential(
        [Dense(16, "relu", name="hidden"), Dropout(0.1, name="drop"), Dense(2, name="out")],
        name="clf",
    )
    model.build((None, 10))
    model.layers[0].weight.data[:5] = 0  # 5 of 10 input rows: half the weights
    text = model.summary(print_fn=None)
    lines = text.splitlines()
    assert lines[2].split() == "Layer (type) Output shape Params FLOPs Sparsity Quant".split()
    assert lines[4].split() == "hidden (Dense) (None, 16) 176 320 50.0% float32".split()
    assert lines[5].split() == "drop (Dropout) (None, 16) 0 - - -".split()
    assert lines[6].split() == "out (Dense) (None, 2) 34 64 0.0% float32".split()
    assert "FLOPs per sample: 384" in text
    assert "Weight sparsity: 41.7% (80 of 192 zero)" in text
    q = model.summary(print_fn=None, quantized={"layers.0": "int8 dynamic"})
    assert q.splitlines()[4].endswith("int8 dynamic")
    assert q.splitlines()[6].endswith("float32")
    assert "Quantized layers: 1 (int8 dynamic)" in q


def test_summary_of_a_quantized_model():
    qz = pytest.importorskip("lepton_nn.compress.quantization")
    ln.set_seed(0)
    model = Sequential([Dense(8, "relu", in_features=4), Dense(2)]).build((None, 4))
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(F32)
    qm = qz.quantize(model, X)
    text = model.summary(print_fn=None, quantized=qm)
    rows = text.splitlines()[4:6]
    assert any("int8" in r for r in rows)


# -- kernels point to their twins --------------------------------------------------------------


def test_numba_kernels_name_their_reference_twin():
    pytest.importorskip("numba")
    from lepton_nn.backend.numba_backend import NumbaBackend
    from lepton_nn.backend.reference import ReferenceBackend

    own = [k for k, v in vars(NumbaBackend).items() if pyinspect.isfunction(v) and k[0] != "_"]
    assert len(own) >= 10
    for name in own:
        doc = getattr(NumbaBackend, name).__doc__ or ""
        assert f"ReferenceBackend.{name} (reference.py)" in doc, name
        assert hasattr(ReferenceBackend, name)
