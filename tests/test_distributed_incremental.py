"""fit_incremental on a real Dask LocalCluster (2 worker processes, 1 thread each): the
partitions are computed on the workers and trained on one at a time; the model equals a
plain loop of TabularModel.partial_fit over the same pandas partitions in the same order."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

from lepton_nn.data import Preprocessor, Table  # noqa: E402
from lepton_nn.distributed import fit_incremental  # noqa: E402
from lepton_nn.distributed.incremental import partitions  # noqa: E402
from lepton_nn.errors import DataError  # noqa: E402
from lepton_nn.tabular import TabularModel  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def frame(n=2400, seed=0):
    rs = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rs.normal(size=n),
            "b": rs.normal(size=n),
            "home": rs.choice(["rent", "own", "other"], n),
        }
    )
    df.loc[df.index % 13 == 0, "b"] = np.nan
    df["y"] = np.where(df.a - df.b.fillna(0) + (df.home == "rent") > 0.5, "bad", "good")
    return df


def params(model):
    return [p.data.copy() for p in model.network.parameters()]


def test_fit_incremental_on_a_cluster_equals_a_partial_fit_loop(client, tmp_path):
    df = frame()
    df.to_parquet(tmp_path / "data.parquet", row_group_size=400)
    ddf = dd.read_parquet(tmp_path / "data.parquet", split_row_groups=True)
    assert ddf.npartitions == 6
    kw = {"seed": 0, "hidden": (8,)}
    on_cluster = fit_incremental(TabularModel(**kw), ddf, "y", epochs=3, client=client)

    # the same by hand: streamed preprocessing over the partitions, then partial_fit in
    # the seeded order
    from lepton_nn.data.stream_fit import fit_stream
    from lepton_nn.tabular_stream import TargetSummary, setup

    parts = [ddf.partitions[i].compute() for i in range(6)]
    types = {"a": "numeric", "b": "numeric", "home": "categorical"}
    tables = [Table.from_pandas(p, target="y", column_types=types) for p in parts]
    by_hand = TabularModel(**kw)
    summary = TargetSummary()
    pre = Preprocessor(missing_indicator=True, column_types=types)
    fit_stream(pre, tables, summary.update)
    setup(by_hand, pre, summary)
    rng = np.random.default_rng(0)
    for _ in range(3):
        for i in rng.permutation(6):
            by_hand.partial_fit(tables[i])
    for p, q in zip(params(on_cluster), params(by_hand), strict=True):
        assert np.array_equal(p, q)
    assert on_cluster.preprocessor.columns_ == by_hand.preprocessor.columns_
    # the streamed statistics are those of the whole frame
    whole = Preprocessor(missing_indicator=True, drop_duplicates=False).fit(
        Table.from_pandas(df, target="y", column_types=types)
    )
    for s, w in zip(on_cluster.preprocessor.columns_, whole.columns_, strict=True):
        for k, v in w.items():
            assert s[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v)
    x = df.drop(columns="y")
    assert np.mean(on_cluster.predict(x) == df.y.to_numpy()) > 0.9
    assert len(on_cluster.history["loss"]) == 3
    assert on_cluster.history["loss"][-1] < on_cluster.history["loss"][0]
    # without a client (Dask's local scheduler): the same model
    here = fit_incremental(TabularModel(**kw), ddf, "y", epochs=3)
    for p, q in zip(params(on_cluster), params(here), strict=True):
        assert np.array_equal(p, q)


def test_partitions_come_in_the_order_asked_from_the_workers(client):
    df = frame(300)
    ddf = dd.from_pandas(df, npartitions=5)
    order = [3, 0, 4, 1, 2]
    got = list(partitions(ddf, order, client))
    for i, part in zip(order, got, strict=True):
        pd.testing.assert_frame_equal(part, ddf.partitions[i].compute())


def test_fit_incremental_refuses_a_missing_target(client):
    ddf = dd.from_pandas(frame(100), npartitions=2)
    with pytest.raises(DataError, match="no column 'label'"):
        fit_incremental(TabularModel(), ddf, "label", client=client)
