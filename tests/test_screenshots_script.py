"""``docs/screenshots.py`` survives the page redrawing under it (without a browser: the
end-to-end run is ``test_studio_views_browser.py``): a wait treats an element replaced
between finding and reading as "not yet" and finds it again, and an attribute is read in the
page in one step, holding no element reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

exceptions = pytest.importorskip("selenium.common.exceptions")


@pytest.fixture(scope="module")
def shots():
    path = Path(__file__).resolve().parents[1] / "docs" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("studio_screenshots_unit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_wait_outlives_elements_redrawn_under_it(shots):
    calls = []

    def cond():
        calls.append(1)
        if len(calls) < 3:  # the element read went stale: the graph was redrawn
            raise exceptions.StaleElementReferenceException("redrawn")
        return "0.25"

    assert shots._wait(cond, "a norm", timeout=5) == "0.25" and len(calls) == 3
    with pytest.raises(RuntimeError, match="did not show a norm"):
        shots._wait(lambda: None, "a norm", timeout=0.2)


def test_an_attribute_is_read_in_one_step(shots):
    class Driver:  # finding an element and then reading it is the race: not allowed here
        def find_elements(self, *a):
            raise AssertionError("held an element reference")

        def execute_script(self, script, *args):
            self.args = args
            return "1.5" if "getAttribute" in script else None

    drv = Driver()
    assert shots._attr(drv, "op-out-1", "data-value-norm") == "1.5"
    assert drv.args == ("op-out-1", "data-value-norm")
