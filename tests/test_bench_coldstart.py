"""W7's fresh processes start with their bytecode compiled, as installed packages do."""

from __future__ import annotations

import json

from lepton_nn.bench.options import Options
from lepton_nn.bench.runner import _run_coldstart

_PROBE = (
    "import json, sys\n"
    "print(json.dumps({'seconds': 0.0, 'path': [sys.pycache_prefix, sys.dont_write_bytecode]}))\n"
)


def test_coldstart_scripts_cache_bytecode_and_skip_the_filling_round(monkeypatch):
    # The environment this project is developed in sets PYTHONDONTWRITEBYTECODE: without a
    # cache our source modules were compiled on every start, and no installed peer's were.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    opts = Options(threads=[1], coldstart_repeats=2)
    res = _run_coldstart({"probe": {"script": _PROBE, "how": "probe"}}, opts)
    r = res["probe"]
    assert r["error"] is None
    prefix, dont_write = r["path"]
    assert prefix and not dont_write
    assert len(r["wall_s"]) == 2 and len(r["inproc_s"]) == 2  # the untimed round is not kept
    assert len(res["python"]["wall_s"]) == 2
    json.dumps(res)  # the report stores it
