"""The studio's model views in a real headless Chromium (as ``test_studio_browser.py``): a
layer opened into its op nodes (testids ``op-<layer>-<index>``, their shapes and norms), an op
clicked for its detail, the norms after one step, backprop stepping through the ops, and the
saliency of a chosen image."""

from __future__ import annotations

import numpy as np
import pytest
from test_studio_browser import _screenshot, _text, _tid, _wait, browser  # noqa: F401

from lepton_nn import nn
from lepton_nn.losses import get_loss

I = pytest.importorskip("lepton_nn.inspect")
from selenium.webdriver.common.by import By  # noqa: E402

from lepton_nn.inspect.studio import ops_view  # noqa: E402
from lepton_nn.inspect.studio.saliency import saliency_maps  # noqa: E402


def _ready(drv):
    _wait(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "page")


def _click(drv, testid):
    """Click ``testid``, found again if the graph redrew it (it does when norms arrive)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return _tid(drv, testid)[0].click()
        except StaleElementReferenceException:
            pass
    raise AssertionError(f"{testid} kept being redrawn")


def _attr(drv, testid, name):
    return drv.execute_script(
        "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return e ? e.getAttribute(arguments[1]) : null;",
        testid,
        name,
    )


def test_layers_open_into_op_nodes_with_shapes_norms_and_detail(browser, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x[:, :1] + x[:, 2:3] > 0).astype(np.float32)
    layers = [nn.Dense(8, "relu", name="hidden"), nn.Dense(4, "tanh", name="mid")]
    model = nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, 4))
    st = I.studio(model, (x, y), loss="bce", epochs=10_000, batch_size=32, paused=True)
    drv = browser
    try:
        drv.get(st.url)
        _ready(drv)
        assert not drv.find_elements(By.CSS_SELECTOR, "#graph .op")  # closed at first
        _click(drv, "expand-hidden")
        _wait(lambda: _attr(drv, "op-hidden-2", "data-value-norm"), "the op nodes' norms")
        ops = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="op-hidden-"]')
        assert [o.get_attribute("data-testid") for o in ops] == [
            "op-hidden-0",
            "op-hidden-1",
            "op-hidden-2",
        ]
        assert [o.get_attribute("data-shape") for o in ops] == ["(N, 8)"] * 3
        assert [o.get_attribute("data-op") for o in ops] == ["MatMul", "Add", "Relu"]
        assert "x W" in ops[0].text and "(N, 8)" in ops[0].text
        # the norms on the sample rows (paused: the weights the page saw)
        x8, y8 = x[:8], y[:8]
        _, _, want = ops_view.op_arrays(model, "hidden", x8, y8, get_loss("bce"))
        for k, (_, v, g) in enumerate(want):
            norm = float(_attr(drv, f"op-hidden-{k}", "data-value-norm"))
            assert norm == pytest.approx(np.linalg.norm(v.astype(np.float64)), rel=1e-6)
            gnorm = float(_attr(drv, f"op-hidden-{k}", "data-grad-norm"))
            assert gnorm == pytest.approx(np.linalg.norm(g.astype(np.float64)), rel=1e-6)
        assert "||g||" in _tid(drv, "op-hidden-2")[0].text
        # click "+ b": its formula, rule, inputs and its gradient in full (8 x 8)
        _click(drv, "op-hidden-1")
        _wait(lambda: _tid(drv, "tensor-op-grad-values"), "the op's tensors")
        assert _attr(drv, "node-detail", "data-op") == "1"
        assert "z = x W + b" in _text(drv, "node-forward")
        assert "unbroadcast" in _text(drv, "node-derivative")
        assert "op 0 (x W), bias" in _text(drv, "op-inputs")
        cells = _tid(drv, "tensor-op-grad-values")[0].find_elements(By.TAG_NAME, "td")
        assert len(cells) == 8 * 8
        assert float(cells[9].get_attribute("data-value")) == pytest.approx(
            float(want[1][2][1, 1]), rel=1e-5, abs=1e-9
        )
        assert drv.find_elements(By.CSS_SELECTOR, '[data-testid="op-hidden-1"].selected')
        # one step: the run parks again and the open layer's norms follow the new weights
        before = _attr(drv, "op-hidden-0", "data-value-norm")
        _tid(drv, "step")[0].click()
        _wait(lambda: _attr(drv, "op-hidden-0", "data-value-norm") != before, "new norms")
        _, _, now = ops_view.op_arrays(model, "hidden", x8, y8, get_loss("bce"))
        after = float(_attr(drv, "op-hidden-0", "data-value-norm"))
        assert after == pytest.approx(np.linalg.norm(now[0][1].astype(np.float64)), rel=1e-6)
        # every layer open, then backprop stepping through the ops
        _tid(drv, "ops-toggle")[0].click()
        _wait(lambda: _attr(drv, "op-out-1", "data-value-norm"), "every layer's ops")
        assert len(drv.find_elements(By.CSS_SELECTOR, "#graph .op")) == 3 + 3 + 2
        _tid(drv, "backprop-ops")[0].click()
        _tid(drv, "backprop-load")[0].click()
        _wait(lambda: _tid(drv, "backprop-steps")[0].find_elements(By.TAG_NAME, "li"), "steps")
        _tid(drv, "backprop-next")[0].click()  # the loss, then out's "+ b"
        assert "Add" in _text(drv, "backprop-detail")
        current = drv.find_elements(By.CSS_SELECTOR, "#graph .op.bw-current")
        assert [c.get_attribute("data-testid") for c in current] == ["op-out-1"]
        _tid(drv, "backprop-next")[0].click()
        current = drv.find_elements(By.CSS_SELECTOR, "#graph .op.bw-current")
        assert [c.get_attribute("data-testid") for c in current] == ["op-out-0"]
        assert drv.find_elements(By.CSS_SELECTOR, '[data-testid="node-out"].bw-current')
        _screenshot(drv, tmp_path, "studio-ops.png")
        # a live run: the open layers' norms follow it, epoch by epoch
        parked = _attr(drv, "op-out-0", "data-value-norm")
        _click(drv, "resume")
        _wait(lambda: _attr(drv, "op-out-0", "data-value-norm") != parked, "norms during the run")
    finally:
        st.close()
        st.fit_thread.join(10)


def test_an_lstm_opens_into_its_gates(browser):  # noqa: F811
    x = np.random.default_rng(1).normal(size=(16, 5, 3)).astype(np.float32)
    model = nn.Sequential([nn.LSTM(4, name="lstm"), nn.Dense(1, name="out")]).build((None, 5, 3))
    st = I.studio(model, x)
    drv = browser
    try:
        drv.get(st.url)
        _ready(drv)
        _click(drv, "expand-lstm")
        _wait(lambda: _attr(drv, "op-lstm-7", "data-value-norm"), "the gates")
        ops = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="op-lstm-"]')
        assert len(ops) == 8
        assert _attr(drv, "op-lstm-3", "data-shape") == "(N, 5, 4)"  # f over the 5 steps
        assert "f (Sigmoid)" in _tid(drv, "op-lstm-3")[0].text
        assert drv.find_elements(By.CSS_SELECTOR, "#graph .edge.recurrent")  # h_{t-1} -> z_t
        _click(drv, "op-lstm-6")
        _wait(lambda: _tid(drv, "tensor-op-value"), "the cell's tensors")
        assert "c_t = f_t c_{t-1} + i_t g_t" in _text(drv, "node-forward")
        assert "5 time steps" in _text(drv, "op-title")
    finally:
        st.close()


def test_saliency_of_a_chosen_image_and_output(browser, tmp_path):  # noqa: F811
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    layers = [nn.Conv2D(3, 3, activation="relu", name="conv"), nn.MaxPool2D(2, name="pool")]
    model = nn.Sequential([*layers, nn.Flatten(name="flat"), nn.Dense(3, name="out")])
    st = I.studio(model.build((None, 1, 8, 8)), x)
    drv = browser
    try:
        drv.get(st.url)
        _ready(drv)
        _tid(drv, "features-row")[0].clear()
        _tid(drv, "features-row")[0].send_keys("4")
        _tid(drv, "saliency-target")[0].send_keys("2")
        _tid(drv, "features-load")[0].click()
        _wait(lambda: _tid(drv, "saliency-ig"), "the saliency maps")
        assert _attr(drv, "saliency", "data-image") == "4"
        assert _attr(drv, "saliency", "data-target") == "2"
        want = saliency_maps(model, x, 4, 2)
        grad = _tid(drv, "saliency-grad")[0]
        assert grad.get_attribute("data-cells") == "64"  # 8 x 8 pixels
        shown = [float(r.get_attribute("data-value")) for r in grad.find_elements(
            By.CSS_SELECTOR, "rect[data-value]")]  # fmt: skip
        np.testing.assert_allclose(shown, want["gradient"]["values"], rtol=1e-6, atol=1e-12)
        assert _tid(drv, "maps-conv")  # the feature maps beside it
        _screenshot(drv, tmp_path, "studio-saliency.png")
    finally:
        st.close()


def test_a_saved_network_of_two_inputs_through_the_runtime(browser, tmp_path):  # noqa: F811
    import lepton_nn

    a, b = nn.Input((3,), name="a"), nn.Input((2,), name="b")
    ha, hb = nn.Dense(4, "relu", name="left")(a), nn.Dense(4, name="right")(b)
    net = nn.Model([a, b], nn.Dense(1, name="out")(nn.Add(name="join")([ha, hb])))
    lepton_nn.save(net, tmp_path / "two.lnn")
    rng = np.random.default_rng(3)
    rows = {"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(10, 2))}
    st = I.studio(str(tmp_path / "two.lnn"), rows)
    drv = browser
    try:
        drv.get(st.url)
        _ready(drv)
        assert _tid(drv, "input-a") and _tid(drv, "input-b")
        nodes = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="node-"]')
        assert sorted(n.get_attribute("data-testid") for n in nodes) == [
            "node-join",
            "node-left",
            "node-out",
            "node-right",
        ]
        _click(drv, "node-join")
        _wait(lambda: _tid(drv, "tensor-x1-values"), "both inputs of the merge")
        want = st.tensors("join")
        cells = _tid(drv, "tensor-x1-values")[0].find_elements(By.TAG_NAME, "td")
        assert len(cells) == 8 * 4
        assert float(cells[2].get_attribute("data-value")) == pytest.approx(
            want["inputs"][1]["values"][0][2]
        )
        right = {m.name: m for m in net.layers}["right"]
        hb = rows["b"][:8] @ right.weight.data + right.bias.data
        np.testing.assert_allclose(want["inputs"][1]["values"], hb, rtol=1e-5, atol=1e-6)
        assert _tid(drv, "tensor-y-values")
    finally:
        st.close()


def test_a_graph_model_of_two_inputs_with_its_gradients(browser):  # noqa: F811
    a, b = nn.Input((3,), name="a"), nn.Input((2,), name="b")
    ha, hb = nn.Dense(4, "relu", name="left")(a), nn.Dense(4, name="right")(b)
    net = nn.Model([a, b], nn.Dense(1, name="out")(nn.Multiply(name="join")([ha, hb])))
    rng = np.random.default_rng(4)
    x = {"b": rng.normal(size=(10, 2)), "a": rng.normal(size=(10, 3))}
    st = I.studio(net, (x, rng.normal(size=(10, 1))))  # autograd, by input name
    drv = browser
    try:
        drv.get(st.url)
        _ready(drv)
        assert _tid(drv, "input-a") and _tid(drv, "input-b")
        nodes = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="node-"]')
        names = sorted(n.get_attribute("data-testid") for n in nodes)
        assert names == ["node-join", "node-left", "node-out", "node-right"]
        _click(drv, "node-join")
        _wait(lambda: _tid(drv, "tensor-grad-out1-values"), "dL/dx of both inputs")
        want = st.tensors("join")
        right = {m.name: m for m in net.layers}["right"]
        hb = x["b"][:8] @ right.weight.data.astype(np.float64) + right.bias.data
        np.testing.assert_allclose(want["inputs"][1]["values"], hb, rtol=1e-5, atol=1e-6)
        cells = _tid(drv, "tensor-grad-out1-values")[0].find_elements(By.TAG_NAME, "td")
        assert len(cells) == 8 * 4
        got = float(cells[5].get_attribute("data-value"))
        assert got == pytest.approx(want["grad_out"][1]["values"][1][1], rel=1e-5, abs=1e-9)
    finally:
        st.close()


def test_the_docs_screenshots_script_drives_the_real_page(tmp_path):
    """``docs/screenshots.py`` (what makes docs/img/studio*.png) runs end to end."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("studio_screenshots", path)
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    made = shots.main(tmp_path)
    names = ["studio.png", "studio-live.png", "studio-node.png", "studio-saliency.png"]
    assert [p.name for p in made] == names
    for p in made:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, p.name
    docs = Path(__file__).resolve().parents[1] / "docs"
    chapter = (docs / "course" / "07_looking_inside.md").read_text("utf-8")
    for name in names:  # the course shows every one of them, and they are in the repository
        assert f"../img/{name}" in chapter and (docs / "img" / name).is_file()
