"""lepton_nn.distributed imports Dask, distributed, Ray, pyarrow and pandas only when used."""

from __future__ import annotations

from test_import import loaded_after

HEAVY = ("dask", "distributed", "ray", "pyarrow", "pandas")


def test_importing_the_room_and_its_names_loads_no_engine():
    code = (
        "import lepton_nn.distributed as d\n"
        "d.dask_executor, d.ray_executor, d.score, d.iter_batches\n"
        "import lepton_nn.tuning; lepton_nn.tuning.SuccessiveHalving"
    )
    loaded = loaded_after(code)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_the_runtime_stays_numpy_only_with_predict_frame():
    loaded = loaded_after("import lepton_nn.runtime")
    assert "lepton_nn.distributed" not in loaded and "pandas" not in loaded
