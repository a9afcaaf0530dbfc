"""Regenerate the studio's screenshots in ``docs/img/`` from the real page, in headless Chromium.

    python docs/screenshots.py [OUT_DIR]     # from the repository root (default: docs/img)

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``), Selenium
and the ``serve`` extra. Two runs, both on bundled data:

- the ``--demo`` network (breast-cancer rows, 16 relu -> 8 relu -> 1) training in the studio,
  paused after a few epochs with every layer open into its ops and one op clicked:
  ``studio.png`` (graph, op detail, loss curves), ``studio-live.png`` (per-layer statistics and
  histograms), ``studio-node.png`` (a layer's formulas and tensors);
- a small conv net trained for two epochs on the bundled 8 x 8 digits: ``studio-saliency.png``
  (the saliency and feature maps of one test image).

``tests/test_studio_views_browser.py`` runs :func:`main` into a temporary folder, so the script
keeps working as the page changes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--hide-scrollbars",
    "--window-size=1400,1250",
)


def _browser(profile: str):
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(f)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver))


def _wait(cond, what: str, timeout: float = 60.0):
    """``cond()`` once true. The page redraws the graph and the panels as events arrive, so an
    element ``cond`` found may be replaced before it is read: that round counts as not yet,
    and the next one finds the element again."""
    from selenium.common.exceptions import StaleElementReferenceException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = cond()
        except StaleElementReferenceException:
            v = None
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"the page did not show {what} in {timeout:.0f} s")


def _tid(drv, testid: str):
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def _click(drv, testid: str, inner: str | None = None) -> None:
    """Click the element ``testid`` (its first ``inner`` child if given), found again if the
    page redrew it between finding and clicking (the graph redraws when norms arrive)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            e = _tid(drv, testid)[0]
            (e.find_element("css selector", inner) if inner else e).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise RuntimeError(f"{testid} kept being redrawn")


def _attr(drv, testid: str, name: str):
    """The attribute read in the page, in one step (no element reference to go stale)."""
    return drv.execute_script(
        "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return e ? e.getAttribute(arguments[1]) : null;",
        testid,
        name,
    )


def _open(drv, url: str) -> None:
    drv.get(url)
    _wait(lambda: drv.execute_script("return document.body.dataset.ready"), "the page")


def _section(drv, testid: str, path: Path) -> None:
    """A screenshot of the page section (the white card) holding the element ``testid``,
    scrolled to the top of the window (an element shot keeps only what the window shows);
    found again if the page redrew it in between."""

    def shot() -> bool:
        sec = drv.execute_script(
            "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
            "const s = e && e.closest('section'); if (s) s.scrollIntoView(); return s;",
            testid,
        )
        return bool(sec) and sec.screenshot(str(path))

    _wait(shot, f"the section of {testid}")


def shoot_training(drv, out: Path) -> list[Path]:
    from lepton_nn.commands.studio import demo_data, demo_model
    from lepton_nn.inspect import studio
    from lepton_nn.random import set_seed

    set_seed(0)
    x, y = demo_data()
    st = studio(demo_model(x.shape[1]), (x, y), loss="bce", epochs=400, batch_size=32)
    try:
        _open(drv, st.url)
        _wait(lambda: int(_attr(drv, "metric-chart", "data-epochs") or 0) >= 8, "8 epochs")
        _click(drv, "pause")
        _wait(lambda: st.waiting, "the run to park")
        _click(drv, "ops-toggle")
        _wait(lambda: _attr(drv, "op-out-1", "data-value-norm"), "the ops' norms")
        _click(drv, "op-hidden2-1")
        _wait(lambda: _tid(drv, "tensor-op-grad"), "the op's tensors")
        drv.execute_script("window.scrollTo(0, 0)")
        shots = [out / "studio.png", out / "studio-live.png", out / "studio-node.png"]
        drv.save_screenshot(str(shots[0]))
        drv.execute_script(
            "document.querySelector('[data-testid=loss-chart]').closest('section').scrollIntoView()"
        )
        drv.save_screenshot(str(shots[1]))
        _click(drv, "node-hidden1", "text")  # its title (its body shows the ops)
        _wait(lambda: _tid(drv, "tensor-grad-in"), "the layer's tensors")
        drv.execute_script("document.getElementById('node-detail').style.maxHeight = 'none'")
        _section(drv, "node-detail", shots[2])
        return shots
    finally:
        st.close()
        if st.fit_thread is not None:
            st.fit_thread.join(10)


def shoot_saliency(drv, out: Path) -> list[Path]:
    from lepton_nn import nn
    from lepton_nn.datasets import load
    from lepton_nn.inspect import studio
    from lepton_nn.random import set_seed
    from lepton_nn.train import Trainer

    set_seed(0)
    t = load("digits")
    x = (t.to_numpy().astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(t.target).astype(np.int64)
    layers = [nn.Conv2D(8, 3, padding="same", activation="relu", name="conv"), nn.MaxPool2D(2)]
    net = nn.Sequential([*layers, nn.Flatten(), nn.Dense(10, name="out")]).build((None, 1, 8, 8))
    Trainer(net, loss="cross_entropy", lr=1e-2).fit(
        x[:1500], y[:1500], epochs=3, batch_size=32, verbose=0
    )
    st = studio(net, (x[1500:1564], y[1500:1564]), loss="cross_entropy")
    try:
        _open(drv, st.url)
        _tid(drv, "features-row")[0].clear()
        _tid(drv, "features-row")[0].send_keys("3")
        _tid(drv, "features-load")[0].click()
        _wait(lambda: _tid(drv, "saliency-ig") and _tid(drv, "maps-conv"), "the maps")
        shot = out / "studio-saliency.png"
        _section(drv, "saliency", shot)
        return [shot]
    finally:
        st.close()


def main(out: str | os.PathLike = HERE / "img") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="studio-shots-")
    drv = _browser(profile)
    try:
        return shoot_training(drv, out) + shoot_saliency(drv, out)
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # the source tree's lepton_nn, when run from a checkout
    for p in main(*sys.argv[1:2]):
        print(p)
