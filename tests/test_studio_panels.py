"""The studio's panels over HTTP (issue 22): a node's tensors against a NumPy forward and
backward pass (float64), the live statistics of a run (gradient histograms, learning rate,
epoch metrics, sampling), attributions against :mod:`lepton_nn.explain`, feature maps against
a NumPy cross-correlation, the small tensor documents, and the notebook view."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import explain as E  # noqa: E402
from lepton_nn import nn  # noqa: E402
from lepton_nn.inspect.studio.tensor_view import heat, histogram, summary, tensor_view  # noqa: E402
from lepton_nn.random import set_seed  # noqa: E402
from lepton_nn.train import Trainer  # noqa: E402


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, :1] - x[:, 1:2] > 0).astype(np.float32)
    return x, y


def _seq():
    return nn.Sequential([nn.Dense(8, "relu", name="hidden"), nn.Dense(1, name="out")]).build(
        (None, 4)
    )


def _batches(st):
    return [e for e in st.events if e["type"] == "batch"]


def _arr(view):
    return np.array(view["values"], dtype=np.float64)


@pytest.fixture
def served():
    opened = []

    def make(*args, **kwargs):
        st = I.studio(*args, **kwargs)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


def test_node_tensors_match_a_numpy_forward_and_backward(served):
    x, y = _data()
    st = served(_seq(), (x, y), loss="bce")
    m = st.model
    xs, ys = x[:8].astype(np.float64), y[:8].astype(np.float64)
    w1, b1 = (p.data.astype(np.float64) for p in m.layers[0].parameters())
    w2, b2 = (p.data.astype(np.float64) for p in m.layers[1].parameters())
    h = np.maximum(xs @ w1 + b1, 0)
    z = h @ w2 + b2
    dz = (1 / (1 + np.exp(-z)) - ys) / 8  # dL/dz of the mean BCE with logits
    dh = dz @ w2.T
    dpre = dh * (h > 0)

    out = httpx.get(st.url + "api/tensors/out", timeout=30).json()
    assert out["objective"] == "the training loss" and out["rows"] == 8
    assert out["loss"] == pytest.approx(np.mean(np.logaddexp(0, z) - ys * z), rel=1e-5)
    np.testing.assert_allclose(_arr(out["inputs"][0]), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(out["grad_in"]), dz, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_arr(out["grad_out"][0]), dh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_arr(out["weight_grads"]["weight"]), h.T @ dz, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_arr(out["weight_grads"]["bias"]), dz.sum(0), rtol=1e-4, atol=1e-7)

    hid = httpx.get(st.url + "api/tensors/hidden", timeout=30).json()
    np.testing.assert_allclose(_arr(hid["output"]), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(hid["grad_in"]), dh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_arr(hid["grad_out"][0]), dpre @ w1.T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        _arr(hid["weight_grads"]["weight"]), xs.T @ dpre, rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(_arr(hid["weights"]["weight"]), w1, rtol=1e-6)
    assert hid["grad_in"]["norm"] == pytest.approx(np.linalg.norm(dh), rel=1e-4)
    [op] = hid["ops"]  # the fused Linear + ReLU: its output is y, its gradient g
    assert op["op"] == "Linear relu" and op["shape"] == "(8, 8)"
    assert op["grad_norm"] == pytest.approx(np.linalg.norm(dh), rel=1e-4)
    assert all(p.grad is None for p in m.parameters())  # .grad left as it was
    assert httpx.get(st.url + "api/tensors/nope").status_code == 404


def test_each_call_reports_its_own_share_of_a_fanned_out_gradient(served):
    """h feeds side and skip: dL/dh (h's incoming gradient) is the sum of the two outgoing
    gradients of its readers; Add passes g unchanged to both of its inputs."""
    x_in = nn.Input((4,), name="x")
    h = nn.Dense(6, "tanh", name="h")(x_in)
    s = nn.Add(name="skip")([h, nn.Dense(6, name="side")(h)])
    model = nn.Model(x_in, nn.Dense(1, name="head")(s))
    x, y = _data()
    st = served(model, (x, y), loss="bce")
    get = {
        n: httpx.get(st.url + f"api/tensors/{n}", timeout=30).json() for n in ("h", "side", "skip")
    }
    skip, side = get["skip"], get["side"]
    assert len(skip["grad_out"]) == 2
    for g in skip["grad_out"]:  # d(a + b)/da = d(a + b)/db = 1
        np.testing.assert_allclose(_arr(g), _arr(skip["grad_in"]), rtol=1e-6)
    total = _arr(skip["grad_out"][0]) + _arr(side["grad_out"][0])
    np.testing.assert_allclose(_arr(get["h"]["grad_in"]), total, rtol=1e-4, atol=1e-7)
    assert not np.allclose(_arr(side["grad_out"][0]), _arr(get["h"]["grad_in"]))


def test_without_labels_the_objective_is_the_sum_of_the_outputs(served):
    x, _ = _data()
    st = served(_seq(), x)
    out = httpx.get(st.url + "api/tensors/out", timeout=30).json()
    assert out["objective"].startswith("L = sum of the outputs")
    np.testing.assert_array_equal(_arr(out["grad_in"]), np.ones((8, 1)))


def test_a_large_tensor_comes_as_a_heat_map_and_histogram(served):
    x, y = _data()
    model = nn.Sequential([nn.Dense(32, "relu", name="wide"), nn.Dense(1, name="out")])
    st = served(model.build((None, 4)), (x, y), loss="bce")
    d = httpx.get(st.url + "api/tensors/wide", timeout=30).json()
    y_view = d["output"]  # (8, 32): 256 values
    assert y_view["values"] is None and y_view["heat"]["shape"] == [8, 32]
    assert (y_view["heat"]["rows"], y_view["heat"]["cols"]) == (8, 32)
    assert sum(y_view["hist"]["counts"]) == 256
    w = d["weights"]["weight"]  # (4, 32): 128 values, a heat map of the weights
    np.testing.assert_allclose(
        np.array(w["heat"]["values"]).reshape(4, 32), model.layers[0].weight.data, rtol=1e-6
    )


def test_heat_map_cells_are_block_means():
    a = np.arange(96 * 128, dtype=np.float64).reshape(96, 128) % 17
    hm = heat(a, 48, 64)
    want = a.reshape(48, 2, 64, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.array(hm["values"]).reshape(48, 64), want)
    assert (hm["lo"], hm["hi"]) == (want.min(), want.max())
    odd = np.random.default_rng(0).normal(size=(101, 7))  # uneven blocks keep the total
    hm = heat(odd, 10, 64)
    assert hm["cols"] == 7 and hm["rows"] == 10


def test_histogram_samples_evenly_and_ignores_non_finite_values():
    a = np.random.default_rng(0).normal(size=(200, 500)).astype(np.float32)
    h = histogram(a)
    # stride ceil(100000 / 4096) = 25 shares a factor with the 500 units of a row (it would see
    # 20 of them); 27 is the next stride coprime with 500 and sees every unit
    assert np.unique(np.arange(0, a.size, 27) % 500).size == 500
    sample = a.reshape(-1)[::27]
    counts, edges = np.histogram(sample, bins=16, range=(sample.min(), sample.max()))
    assert h["counts"] == counts.tolist() and sum(h["counts"]) <= 4096
    np.testing.assert_allclose(h["edges"], edges, rtol=1e-6)
    b = np.array([1.0, np.nan, np.inf, 3.0, -np.inf])
    assert sum(histogram(b)["counts"]) == 2
    assert histogram(np.full(5, 2.0))["edges"][0] == 1.5
    assert histogram(np.array([np.nan])) is None
    big = np.random.default_rng(1).normal(2.0, 3.0, size=(100, 100)).astype(np.float32)
    s = summary(big)
    sample = big.reshape(-1)[::3].astype(np.float64)  # 10000 values: every third
    assert s["norm"] == pytest.approx(np.linalg.norm(big.astype(np.float64)), rel=1e-5)
    assert s["mean"] == pytest.approx(sample.mean(), rel=1e-9)
    assert s["std"] == pytest.approx(sample.std(), rel=1e-9)
    assert s["hist"] == histogram(big)
    odd = summary(np.array([1.0, np.nan, 3.0]))
    assert odd["mean"] is None and odd["norm"] is None and sum(odd["hist"]["counts"]) == 2
    small = tensor_view(np.arange(6.0).reshape(2, 3))
    assert small["values"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and small["heat"] is None
    assert tensor_view(np.array([np.nan, 1.0]))["values"] == [None, 1.0]


def test_batch_events_carry_gradient_histograms_the_lr_and_epoch_metrics(served):
    x, y = _data()
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None)
    try:
        trainer = Trainer(_seq(), loss="bce", optimizer="sgd", metrics=["accuracy"], lr=0.05)
        trainer.fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        events = _batches(st)
        assert len(events) == 8 and all(e["lr"] == pytest.approx(0.05) for e in events)
        hidden = events[0]["layers"]["hidden"]
        assert sum(hidden["grad_hist"]["counts"]) == 16 * 8 == sum(hidden["hist"]["counts"])
        assert hidden["grad_norm"] > 0 and 0 <= hidden["dead"] <= 1
        assert hidden["update_ratio"] > 0
        epochs = [e for e in st.events if e["type"] == "epoch"]
        assert [e["epoch"] for e in epochs] == [0, 1]
        assert epochs[-1]["logs"]["lr"] == pytest.approx(0.05)
        assert epochs[-1]["logs"]["accuracy"] == pytest.approx(
            trainer.history.history["accuracy"][1]
        )
    finally:
        st.close()


def test_every_k_records_one_batch_in_k_and_keeps_every_loss():
    x, y = _data()
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None, every=3)
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        assert [e["step"] for e in _batches(st)] == [1, 4, 7]
        assert sum(len(e["losses"]) for e in st.events if "losses" in e) == 8
    finally:
        st.close()
    with pytest.raises(ValueError, match="every"):
        I.Studio(every=0)


def test_model_work_times_out_when_no_batch_boundary_comes():
    st = I.Studio(model=_seq(), sample=_data())
    st.training = True  # a run that never reaches on_batch_begin
    with pytest.raises(TimeoutError):
        st.on_model(lambda: 1, timeout=0.05)
    assert st._jobs == []
    st.training = False
    assert st.on_model(lambda: 2) == 2


def test_attributions_of_a_row_and_global_importances(served):
    x, y = _data()
    names = ["a", "b", "c", "d"]
    set_seed(0)
    st = served(_seq(), (x, y), loss="bce", feature_names=names)
    Trainer(st.model, loss="bce").fit(x, y, epochs=40, batch_size=16, verbose=0)
    d = httpx.get(st.url + "api/explain?row=5", timeout=60).json()
    assert d["features"] == names and d["row"] == 5 and d["rows"] == 64
    want = E.integrated_gradients(st.model, x[5:6], steps=32)[0]
    np.testing.assert_allclose(d["attributions"], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        d["grad_x_input"], E.gradient_x_input(st.model, x[5:6])[0], rtol=1e-5
    )
    f0 = float(st.model(np.zeros((1, 4), np.float32)).data[0, 0])
    assert sum(d["attributions"]) - d["delta"] == pytest.approx(d["output"][0] - f0, abs=1e-4)
    imp = d["importances"]
    assert imp["metric"] == "roc_auc" and len(imp["mean"]) == 4
    want = E.permutation_importance(st.model, x, y, n_repeats=3)
    np.testing.assert_allclose(imp["mean"], want["importances_mean"], atol=1e-12)
    assert imp["mean"][0] > max(imp["mean"][2], imp["mean"][3])  # y uses a (and b), not c, d
    assert httpx.get(st.url + "api/explain?row=64").status_code == 404
    assert httpx.get(st.url + "api/explain?row=x").status_code == 400


def _conv_model():
    return nn.Sequential(
        [
            nn.Conv2D(3, 3, activation="relu", name="conv"),
            nn.MaxPool2D(2, name="pool"),
            nn.Flatten(name="flat"),
            nn.Dense(1, name="out"),
        ]
    ).build((None, 1, 8, 8))


def test_feature_maps_of_a_conv_net_match_a_numpy_cross_correlation(served):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.float32)[:, None]
    st = served(_conv_model(), (x, y), loss="bce")
    d = httpx.get(st.url + "api/features?row=2", timeout=30).json()
    assert [(l["name"], l["shape"]) for l in d["layers"]] == [
        ("conv", [3, 6, 6]),
        ("pool", [3, 3, 3]),
    ]
    conv = st.model.layers[0]
    w, b = conv.weight.data.astype(np.float64), conv.bias.data.astype(np.float64)
    img = x[2, 0].astype(np.float64)
    want = np.zeros((3, 6, 6))
    for o in range(3):
        for i in range(6):
            for j in range(6):
                want[o, i, j] = max(0.0, b[o] + np.sum(w[o, 0] * img[i : i + 3, j : j + 3]))
    got = np.array([m["values"] for m in d["layers"][0]["maps"]]).reshape(3, 6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(d["image"][0]["values"]).reshape(8, 8), img, rtol=1e-6)
    assert httpx.get(st.url + "api/features?row=6").status_code == 404
    # attributions are for tabular input; a dense net has no maps
    assert httpx.get(st.url + "api/explain?row=0").status_code == 400
    st2 = served(_seq(), _data())
    assert httpx.get(st2.url + "api/features?row=0").json()["layers"] == []


def test_notebook_view_is_an_iframe_of_the_served_page(served):
    st = served(_seq(), _data())
    html = st._repr_html_()
    assert html.startswith(f'<iframe src="{st.url}"') and "</iframe>" in html


# -- a trained file through the runtime alone ----------------------------------------------------
def _saved(tmp_path):
    import lepton_nn

    layers = [nn.Dense(8, "relu", name="hidden"), nn.Dense(4, name="mid"), nn.ReLU(name="act")]
    net = nn.Sequential([*layers, nn.Dropout(0.2, name="drop"), nn.Dense(1, "sigmoid", name="out")])
    net.build((None, 4))
    path = tmp_path / "net.lnn"
    lepton_nn.save(net, path)
    return net, path


def test_a_saved_file_is_shown_through_the_runtime_step_by_step(served, tmp_path):
    from lepton_nn.runtime import InferenceModel, load

    net, path = _saved(tmp_path)
    x, y = _data()
    st = served(str(path), (x, y))
    assert isinstance(st.model, InferenceModel) and st.runtime
    g = httpx.get(st.url + "api/graph").json()
    assert [n["name"] for n in g["nodes"]] == ["hidden", "mid+act", "out"]  # ReLU fused
    assert [n["shape"] for n in g["nodes"]] == ["(N, 8)", "(N, 4)", "(N, 1)"]
    assert g["edges"] == [["input", "hidden"], ["hidden", "mid+act"], ["mid+act", "out"]]
    node = httpx.get(st.url + "api/node/mid+act").json()
    assert "runtime step" in node["forward"] and "no gradients" in node["derivative"]
    # every step's output on the sample rows, against NumPy in float64
    xs = x[:8].astype(np.float64)
    w = [[p.data.astype(np.float64) for p in m.parameters()] for m in net.layers if m.parameters()]
    h1 = np.maximum(xs @ w[0][0] + w[0][1], 0)
    h2 = np.maximum(h1 @ w[1][0] + w[1][1], 0)
    out = 1 / (1 + np.exp(-(h2 @ w[2][0] + w[2][1])))
    got = {n: httpx.get(st.url + f"api/tensors/{n}").json() for n in ("hidden", "mid+act", "out")}
    np.testing.assert_allclose(_arr(got["hidden"]["output"]), h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(got["mid+act"]["inputs"][0]), h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(got["mid+act"]["output"]), h2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(got["out"]["output"]), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_arr(got["out"]["output"]), load(path).forward(x[:8]), rtol=1e-6)
    np.testing.assert_allclose(_arr(got["hidden"]["weights"]["w"]), w[0][0], rtol=1e-6)
    assert got["out"]["grad_in"] is None and got["out"]["weight_grads"] == {}
    for api in ("api/backward", "api/explain?row=0"):  # no autograd here
        r = httpx.get(st.url + api)
        assert r.status_code == 400 and "runtime keeps no gradients" in r.json()["error"]


def test_cli_studio_serves_a_saved_file_on_csv_rows(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import PKG_PARENT

    _, path = _saved(tmp_path)
    x, _ = _data(10)
    csv = tmp_path / "rows.csv"
    lines = ["a,b,c,d"] + [",".join(f"{v:.6f}" for v in row) for row in x]
    csv.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}
    cmd = [sys.executable, "-m", "lepton_nn", "studio", str(path), "--data", str(csv)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("studio at http://127.0.0.1:"), line
        url = line.split()[2]
        d = httpx.get(url + "api/tensors/hidden", timeout=30).json()
        assert d["rows"] == 8 and d["inputs"][0]["shape"] == [8, 4]
        np.testing.assert_allclose(_arr(d["inputs"][0]), x[:8], atol=1e-6)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_statistics_of_a_recorded_batch_match_numpy():
    """One SGD batch of 16 rows: the activations' mean, std, norm and dead share, and the
    update ratio ||W1 - W0|| / ||W0|| and ||dL/dW|| = ||W1 - W0|| / lr, from the weights."""
    x, y = _data(16)
    model = _seq()
    w0 = [p.data.astype(np.float64) for p in model.parameters()]
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None)
    try:
        Trainer(model, loss="bce", optimizer="sgd", lr=0.5).fit(
            x, y, epochs=1, batch_size=16, callbacks=[st], verbose=0
        )
        [e] = _batches(st)
    finally:
        st.close()
    w1 = [p.data.astype(np.float64) for p in model.parameters()]
    h = np.maximum(x.astype(np.float64) @ w0[0] + w0[1], 0)
    s = e["layers"]["hidden"]
    assert s["act_mean"] == pytest.approx(h.mean(), rel=1e-5)
    assert s["act_std"] == pytest.approx(h.std(), rel=1e-4)
    assert s["value_norm"] == pytest.approx(np.linalg.norm(h), rel=1e-5)
    assert s["dead"] == np.mean(h.max(axis=0) <= 0)
    du = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(w1[:2], w0[:2])))
    assert s["update_ratio"] == pytest.approx(
        du / np.sqrt(sum(np.sum(b**2) for b in w0[:2])), rel=1e-4
    )
    assert s["weight_grad_norm"] == pytest.approx(du / 0.5, rel=1e-4)
    assert s["weight_norm"] == pytest.approx(np.sqrt(sum(np.sum(a**2) for a in w1[:2])), rel=1e-5)
    z = h @ w0[2] + w0[3]
    g = (1 / (1 + np.exp(-z)) - y) / 16  # dL/d(out)
    o = e["layers"]["out"]
    assert o["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-4)
    assert o["grad_mean"] == pytest.approx(g.mean(), rel=1e-4, abs=1e-7)
    assert o["dead"] is None and e["layers"]["hidden"]["grad_std"] > 0


def test_a_tabular_model_is_explained_per_raw_column(served, tmp_path):
    from lepton_nn.data.csv_reader import read_csv
    from lepton_nn.tabular import TabularModel

    rng = np.random.default_rng(0)
    n = 120
    a, b = rng.normal(size=n), rng.normal(size=n)
    city = rng.choice(["north", "south", "east"], size=n)
    label = np.where(a + (city == "north") > 0.3, "bad", "good")
    lines = ["a,b,city,label"] + [f"{a[i]:.4f},{b[i]:.4f},{city[i]},{label[i]}" for i in range(n)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    table = read_csv(tmp_path / "rows.csv", target="label")
    tab = TabularModel(hidden=(8,), epochs=15, validation_split=0, positive="bad").fit(table)
    st = served(tab, table)
    assert [n["name"] for n in httpx.get(st.url + "api/graph").json()["nodes"]][-1] == (
        tab.network.layers[-1].name
    )
    d = httpx.get(st.url + "api/explain?row=4", timeout=60).json()
    assert d["features"] == ["a", "b", "city"]  # raw columns, not the one-hot features
    assert d["values"] == [pytest.approx(a[4], abs=1e-4), pytest.approx(b[4], abs=1e-4), city[4]]
    rows = table.take(np.arange(64))
    want = E.integrated_gradients(tab, rows.take([4]), steps=32)[0]
    np.testing.assert_allclose(d["attributions"], want, rtol=1e-5, atol=1e-7)
    imp = E.permutation_importance(tab, rows, np.asarray(table.target)[:64], n_repeats=3)
    np.testing.assert_allclose(d["importances"]["mean"], imp["importances_mean"], atol=1e-12)
    # the network's tensors and backprop run on the preprocessed rows with the encoded target
    first = tab.network.layers[0].name
    t = httpx.get(st.url + f"api/tensors/{first}", timeout=30).json()
    assert t["inputs"][0]["shape"] == [8, tab.transform(rows).shape[1]]
    assert t["objective"] == "the training loss" and t["loss"] > 0
    steps = httpx.get(st.url + "api/backward", timeout=30).json()["steps"]
    assert steps[0]["label"] == "BCEWithLogits"


def test_only_the_last_batch_events_keep_their_layer_statistics(monkeypatch):
    from lepton_nn.inspect.studio import session

    monkeypatch.setattr(session, "KEEP_LAYERS", 3)
    x, y = _data()
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None)
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        events = _batches(st)
        assert ["layers" in e for e in events] == [False] * 5 + [True] * 3
        assert [e["step"] for e in events] == list(range(1, 9))
        assert sum(len(e["losses"]) for e in events) == 8  # every loss kept
        assert [e["seq"] for e in st.events] == list(range(len(st.events)))
        assert (
            httpx.get(st.url + "api/node/hidden").json()["stats"] == events[-1]["layers"]["hidden"]
        )
    finally:
        st.close()


def test_losses_keep_flowing_when_the_budget_holds_statistics_back():
    """No time budget left after the first batch (overhead 0): the statistics stop, and
    every later batch's loss still goes out in a losses event (max_rate ~ no limit)."""
    x, y = _data()
    st = I.Studio(sample=(x, y), max_rate=1e9, overhead=0.0)
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        sent = [e for e in st.events if e["type"] in ("batch", "losses")]
        assert [e["type"] for e in sent] == ["batch"] + ["losses"] * 7
        assert [e["step"] for e in sent] == list(range(1, 9))
        assert all(len(e["losses"]) == 1 for e in sent)
    finally:
        st.close()
