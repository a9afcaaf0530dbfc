"""The studio page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium): the graph's nodes, a click showing a layer's formula, the loss curve
gaining points while ``fit`` runs and stopping on pause, the histograms, and backprop steps.
Skipped only when /usr/bin/chromium is absent (CI installs it in ``.ci/run``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "no /usr/bin/chromium (apt-get install chromium chromium-driver)", allow_module_level=True
    )
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import nn  # noqa: E402

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="studio-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(cond, what, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _tid(drv, testid):
    return drv.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def _text(drv, testid) -> str:
    """The text of an element the page redraws on every event (no stale reference)."""
    return drv.execute_script(
        "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return e ? e.textContent : null;",
        testid,
    )


def _points(drv) -> int:
    return int(_tid(drv, "loss-chart")[0].get_attribute("data-points"))


def _updates(drv, testid) -> int:
    return int(_tid(drv, testid)[0].get_attribute("data-updates") or 0)


def _epochs(drv) -> int:
    return int(_tid(drv, "metric-chart")[0].get_attribute("data-epochs"))


def _stat(drv, layer, stat) -> str:
    return drv.execute_script(
        "const r = document.querySelector(`[data-testid='stats-${arguments[0]}']`);"
        "const c = r && r.querySelector(`[data-stat='${arguments[1]}']`);"
        "return c ? c.textContent : null;",
        layer,
        stat,
    )


def _screenshot(drv, tmp_path, name):
    """Into the test's folder, and into $LEPTON_TEST_ARTIFACTS when set (CI keeps it)."""
    path = tmp_path / name
    drv.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    keep = os.environ.get("LEPTON_TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, name))


def test_page_shows_the_graph_trains_live_and_steps_backprop(browser, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x[:, :1] + x[:, 2:3] > 0).astype(np.float32)
    layers = [nn.Dense(8, "relu", name="hidden"), nn.Dense(4, "tanh", name="mid")]
    model = nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, 4))
    st = I.studio(
        model,
        (x, y),
        loss="bce",
        epochs=10_000,
        batch_size=32,
        paused=True,
        feature_names=["a", "b", "c", "d"],
    )
    drv = browser
    try:
        drv.get(st.url)
        _wait(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "page")
        # the graph: one node per layer, named after it
        nodes = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="node-"]')
        assert sorted(n.get_attribute("data-testid") for n in nodes) == [
            "node-hidden",
            "node-mid",
            "node-out",
        ]
        assert len(nodes) == len(model.layers)
        # click a node: its formula and local derivative appear
        _tid(drv, "node-mid")[0].click()
        _wait(lambda: _tid(drv, "node-forward"), "the node detail")
        assert _tid(drv, "node-forward")[0].text.startswith("y = f(x W + b)")
        assert "tanh" in _tid(drv, "node-forward")[0].text
        assert "G_z = g * f'(z)" in _tid(drv, "node-derivative")[0].text
        # ... and its tensors on the sample rows: the incoming gradient dL/dy in full (8 x 4)
        _wait(lambda: _tid(drv, "tensor-grad-in-values"), "the node's tensors")
        want = st.tensors("mid")["grad_in"]  # paused: the same weights
        cells = _tid(drv, "tensor-grad-in-values")[0].find_elements(By.TAG_NAME, "td")
        assert len(cells) == 8 * 4
        assert float(cells[5].get_attribute("data-value")) == pytest.approx(want["values"][1][1])
        assert float(cells[5].text) == pytest.approx(want["values"][1][1], abs=6e-5)  # shown
        assert _tid(drv, "tensor-grad-out0-values") and _tid(drv, "tensor-grad-weight-values")
        assert "Linear tanh" in _text(drv, "node-ops")
        assert _points(drv) == 0  # paused before the first batch
        # backprop stepping, while paused: the loss first, then the layers in reverse
        _tid(drv, "backprop-load")[0].click()
        _wait(lambda: _tid(drv, "backprop-steps")[0].find_elements(By.TAG_NAME, "li"), "steps")
        detail = _tid(drv, "backprop-detail")[0]
        assert "BCEWithLogits" in detail.text and "step 1 of" in detail.text
        _tid(drv, "backprop-next")[0].click()
        assert "step 2 of" in detail.text and "Linear" in detail.text
        assert drv.find_elements(By.CSS_SELECTOR, '[data-testid="node-out"].bw-current')
        current = drv.find_elements(By.CSS_SELECTOR, "#backprop-steps li.current")
        assert len(current) == 1
        assert drv.find_elements(By.CSS_SELECTOR, "#backprop-steps li.source")  # W, b, input
        # step one batch: exactly one point
        _tid(drv, "step")[0].click()
        _wait(lambda: _points(drv) == 1, "one loss point")
        # resume: the curve gains points while fit runs
        _tid(drv, "resume")[0].click()
        _wait(lambda: _points(drv) >= 5, "points while training")
        first = _points(drv)
        _wait(lambda: _points(drv) > first + 3, "more points")
        # histograms of every layer's activations and gradients, with bars, redrawn
        bars = _tid(drv, "hist-hidden")[0].find_elements(By.TAG_NAME, "rect")
        assert len(bars) == 16
        assert len(_tid(drv, "grad-hist-hidden")[0].find_elements(By.TAG_NAME, "rect")) == 16
        assert _tid(drv, "hist-out") and _tid(drv, "grad-hist-out")
        seen = _updates(drv, "grad-hist-hidden")
        _wait(lambda: _updates(drv, "grad-hist-hidden") > seen + 2, "histograms to update")
        # the learning rate, the dead-ReLU share and update/weight ratio per layer
        assert float(_text(drv, "lr")) == pytest.approx(1e-3)
        dead = _stat(drv, "hidden", "dead")
        assert 0 <= float(dead) <= 1 and _stat(drv, "out", "dead") == "-"  # ReLU only
        assert float(_stat(drv, "mid", "update_ratio")) > 0
        # epochs end (8 batches each): the metric chart gains a point per epoch
        _wait(lambda: _epochs(drv) >= 2, "two epochs")
        assert drv.find_elements(By.CSS_SELECTOR, '#metric-chart polyline[data-series="loss"]')
        # the selected node now shows norms after the last step
        assert "||y|| " in _text(drv, "node-norms")
        assert "||y|| -" not in _text(drv, "node-norms")
        # pause: the points stop
        _tid(drv, "pause")[0].click()
        _wait(lambda: st.waiting, "the fit thread to park")
        _wait(lambda: _points(drv) == st._step, "the page to draw every batch's loss")
        held = _points(drv)
        time.sleep(0.5)
        assert _points(drv) == held
        assert "paused" in _text(drv, "status")
        drv.execute_script("window.scrollTo(0, 0)")
        _screenshot(drv, tmp_path, "studio.png")
        # attributions of row 3: one bar per column, and the global importances
        _tid(drv, "explain-row")[0].clear()
        _tid(drv, "explain-row")[0].send_keys("3")
        _tid(drv, "explain-load")[0].click()
        _wait(lambda: _tid(drv, "attr-bars"), "the attributions")
        assert len(_tid(drv, "attr-bars")[0].find_elements(By.TAG_NAME, "rect")) == 4
        assert len(_tid(drv, "importances")[0].find_elements(By.TAG_NAME, "rect")) == 4
        assert _tid(drv, "attributions")[0].get_attribute("data-row") == "3"
        _screenshot(drv, tmp_path, "studio-attributions.png")
    finally:
        st.close()
        st.fit_thread.join(10)


def test_feature_maps_of_a_chosen_image(browser, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.float32)[:, None]
    layers = [nn.Conv2D(3, 3, activation="relu", name="conv"), nn.MaxPool2D(2, name="pool")]
    model = nn.Sequential([*layers, nn.Flatten(name="flat"), nn.Dense(1, name="out")])
    st = I.studio(model.build((None, 1, 8, 8)), (x, y), loss="bce")
    drv = browser
    try:
        drv.get(st.url)
        _wait(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "page")
        _tid(drv, "features-row")[0].clear()
        _tid(drv, "features-row")[0].send_keys("2")
        _tid(drv, "features-load")[0].click()
        _wait(lambda: _tid(drv, "maps-conv"), "the feature maps")
        maps = _tid(drv, "maps-conv")[0].find_elements(By.CSS_SELECTOR, "svg")
        assert len(maps) == 3 and maps[0].get_attribute("data-cells") == "36"  # 6 x 6
        assert len(maps[0].find_elements(By.TAG_NAME, "rect")) == 36
        assert len(_tid(drv, "maps-pool")[0].find_elements(By.CSS_SELECTOR, "svg")) == 3
        assert _tid(drv, "feature-maps")[0].get_attribute("data-image") == "2"
        # a conv node's tensors are large: heat maps and histograms
        _tid(drv, "node-conv")[0].click()
        _wait(lambda: _tid(drv, "tensor-y-heat"), "the conv node's heat map")
        assert _tid(drv, "tensor-y-hist") and _tid(drv, "tensor-grad-in-heat")
        _screenshot(drv, tmp_path, "studio-conv.png")
    finally:
        st.close()


def test_a_saved_file_through_the_runtime(browser, tmp_path):
    import lepton_nn

    layers = [nn.Dense(8, "relu", name="hidden"), nn.Dense(4, name="mid"), nn.ReLU(name="act")]
    net = nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, 4))
    lepton_nn.save(net, tmp_path / "net.lnn")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    st = I.studio(str(tmp_path / "net.lnn"), x)
    drv = browser
    try:
        drv.get(st.url)
        _wait(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "page")
        nodes = drv.find_elements(By.CSS_SELECTOR, '#graph [data-testid^="node-"]')
        names = sorted(n.get_attribute("data-testid") for n in nodes)
        assert names == ["node-hidden", "node-mid+act", "node-out"]  # the fused runtime step
        _tid(drv, "node-mid+act")[0].click()
        _wait(lambda: _tid(drv, "tensor-y-values"), "the step's output")
        cells = _tid(drv, "tensor-y-values")[0].find_elements(By.TAG_NAME, "td")
        want = st.tensors("mid+act")["output"]["values"]
        assert len(cells) == 8 * 4
        assert float(cells[0].get_attribute("data-value")) == pytest.approx(want[0][0])
        assert not _tid(drv, "tensor-grad-in")  # the runtime keeps no gradients
        assert "no gradients" in _text(drv, "node-derivative")
    finally:
        st.close()
