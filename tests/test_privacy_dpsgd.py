"""DP-SGD: clipping bound, noise scale, Poisson batches, make_private, the trainer hook."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn import losses, nn, optim
from lepton_nn.privacy import Privacy, epsilon, make_private, per_example_grads
from lepton_nn.random import set_seed
from lepton_nn.train import Trainer


def _data(n=200, f=5, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, f))
    y = (x @ r.normal(size=f) + 0.3 * r.normal(size=n) > 0).astype(np.float64)[:, None]
    return x, y


def _mlp(f=5, seed=1):
    set_seed(seed)
    m = nn.Sequential([nn.Dense(8, "relu", in_features=f), nn.Dense(1, in_features=8)])
    return m.astype("float64")


def _one_step(model, x, y, sigma, c, opt_cls=optim.SGD):
    """One DP step on the whole of (x, y) as the batch; returns the DPOptimizer."""
    opt = opt_cls(model.parameters(), lr=0.0)
    priv = make_private(model, opt, (x, y), batch_size=len(x), epochs=1, noise_multiplier=sigma,
                        max_grad_norm=c, seed=0)  # fmt: skip
    loss = losses.binary_cross_entropy_with_logits(model(x), y)
    priv.optimizer.zero_grad()
    loss.backward()
    priv.optimizer.step()
    priv.detach()
    return priv.optimizer


def test_step_without_noise_is_the_mean_of_clipped_gradients():
    x, y = _data(40)
    m = _mlp()
    g = per_example_grads(m, losses.binary_cross_entropy_with_logits, x, y)
    flat = np.concatenate([v.reshape(40, -1) for v in g.values()], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    c = float(np.median(norms))  # half the examples get clipped
    coef = np.minimum(1, c / (norms + 1e-6))
    assert np.all(np.linalg.norm(flat * coef[:, None], axis=1) <= c * (1 + 1e-12))
    dp = _one_step(m, x, y, 0.0, c)
    np.testing.assert_allclose(dp.last_norms, norms, rtol=1e-10)
    for name, p in m.named_parameters():
        want = np.tensordot(coef, g[name], axes=1) / 40
        np.testing.assert_allclose(p.grad, want, rtol=1e-10, atol=1e-14, err_msg=name)


def test_noise_has_the_stated_scale():
    x, y = _data(50, f=60)
    set_seed(2)
    m = nn.Sequential([nn.Dense(150, in_features=60), nn.Dense(1, in_features=150)])
    m.astype("float64")
    _one_step(m, x, y, 0.0, 0.5)
    clean = {n: p.grad.copy() for n, p in m.named_parameters()}
    sigma, c = 1.3, 0.5
    dp = _one_step(m, x, y, sigma, c)
    noise = np.concatenate([(p.grad - clean[n]).ravel() for n, p in m.named_parameters()])
    noise *= dp.expected_batch_size
    assert noise.size > 9000
    # the sample std of 9000 normals is within 3% of the true one with overwhelming odds
    assert np.std(noise) == pytest.approx(sigma * c, rel=0.03)
    assert abs(np.mean(noise)) < 4 * sigma * c / np.sqrt(noise.size)


def test_poisson_loader_rates_seed_and_empty_batches():
    x, y = _data(1000)
    m = _mlp()
    priv = make_private(m, optim.SGD(m.parameters(), lr=0.1), (x, y), batch_size=20, epochs=1,
                        noise_multiplier=1.0, seed=7)  # fmt: skip
    sizes = [len(b[0]) for b in priv.loader]
    assert len(priv.loader) == 50 and len(sizes) == 50  # no batch is empty at q N = 20
    assert abs(np.mean(sizes) - 20) < 3 and np.std(sizes) > 1  # sizes vary: Poisson, not fixed
    m2 = _mlp()
    again = make_private(m2, optim.SGD(m2.parameters(), lr=0.1), (x, y), batch_size=20,
                         epochs=1, noise_multiplier=1.0, seed=7)  # fmt: skip
    assert [len(b[0]) for b in again.loader] == sizes
    priv.detach()
    again.detach()
    # a tiny rate: most batches are empty; each still takes a (noise-only) accounted step
    m = _mlp()
    priv = make_private(m, optim.SGD(m.parameters(), lr=0.1), (x[:10], y[:10]), batch_size=1,
                        epochs=1, noise_multiplier=1.0, seed=1)  # fmt: skip
    priv.loader.sample_rate = 0.001
    before = m.layers[0].weight.data.copy()
    assert list(priv.loader) == []
    assert priv.accountant.steps == 10
    assert not np.array_equal(before, m.layers[0].weight.data)  # noise moved the weights
    priv.detach()


@pytest.mark.parametrize("opt_cls,lr", [(optim.SGD, 1.0), (optim.Adam, 0.05), (optim.AdamW, 0.05)])
def test_training_learns_and_is_reproducible(opt_cls, lr):
    x, y = _data(400)

    def run():
        m = _mlp()
        opt = opt_cls(m.parameters(), lr=lr)
        priv = make_private(m, opt, (x, y), batch_size=40, epochs=4, target_epsilon=5.0, seed=3)
        for _ in range(4):
            for xb, yb in priv.loader:
                loss = losses.binary_cross_entropy_with_logits(m(xb), yb)
                priv.optimizer.zero_grad()
                loss.backward()
                priv.optimizer.step()
        priv.detach()
        acc = np.mean((m(x).data > 0) == (y > 0.5))
        return m.layers[0].weight.data.copy(), acc, priv

    w1, acc, priv = run()
    w2, _, _ = run()
    np.testing.assert_array_equal(w1, w2)
    assert acc > 0.8
    assert priv.accountant.steps == 40
    assert 4.8 < priv.epsilon(1e-5) <= 5.0


def test_make_private_argument_errors():
    x, y = _data(50)
    m = _mlp()
    opt = optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        make_private(m, opt, (x, y), batch_size=10, epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        make_private(m, opt, (x, y), batch_size=0, epochs=1, noise_multiplier=1.0)
    other = optim.SGD(_mlp().parameters(), lr=0.1)
    with pytest.raises(Exception, match="not the model's"):
        make_private(m, other, (x, y), batch_size=10, epochs=1, noise_multiplier=1.0)
    assert all("call" not in vars(layer) for layer in m.layers)  # refused: left as it was


def test_trainer_fit_with_privacy_reports_epsilon_each_epoch():
    x, y = _data(300)
    m = _mlp()
    # metrics: Poisson batches hold a varying number of rows (no fixed-size output buffer)
    t = Trainer(m, "bce", optim.Adam(m.parameters(), lr=0.05), metrics=["accuracy"])
    hist = t.fit(x, y, epochs=3, batch_size=30, verbose=0, seed=5, validation_split=0.1,
                 privacy=Privacy(target_epsilon=2.0, target_delta=1e-5))  # fmt: skip
    assert len(hist.history["val_accuracy"]) == 3
    eps = hist.history["epsilon"]
    assert len(eps) == 3 and eps[0] < eps[1] < eps[2] <= 2.0
    rep = t.privacy_report
    assert rep["epsilon"] == eps[-1] and rep["steps"] == 27 and rep["delta"] == 1e-5
    assert eps[-1] == pytest.approx(
        epsilon(rep["noise_multiplier"], rep["sample_rate"], 27, 1e-5), rel=1e-12
    )
    assert all("call" not in vars(layer) for layer in m.layers)  # detached after fit
    with pytest.raises(ValueError, match="privacy"):
        t.fit(x, y, epochs=1, verbose=0, class_weight="balanced", privacy=Privacy(2.0))


def test_tabular_model_private_preprocessing_and_model_file(tmp_path, capsys):
    import warnings

    from lepton_nn import datasets, load, save
    from lepton_nn.tabular import TabularModel

    table = datasets.load_credit().take(np.arange(600))
    bounds = {"Age": (18, 100)}
    cats = {"Records": ["no", "yes"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # categories the DP histogram did not release
        priv = Privacy(3.0, 1e-5, bounds=bounds, categories=cats)
        m = TabularModel(epochs=2, batch_size=60, seed=0, positive="bad", privacy=priv).fit(table)
    card = m.privacy_card
    assert card["epsilon"] <= 3.0 + 1e-9 and card["delta"] <= 1e-5
    pre = card["preprocessing"]
    assert pre["epsilon"] == pytest.approx(0.3) and card["training_epsilon"] <= 2.7
    assert pre["columns"]["Age"].startswith("DP quantiles within public bounds [18, 100]")
    assert pre["columns"]["Records"] == "public categories"
    assert pre["columns"]["Income"].startswith("DP quantiles (")
    assert pre["columns"]["Home"].startswith("DP histogram")
    age = next(c for c in m.preprocessor.columns_ if c["name"] == "Age")
    assert 18 <= age["center"] <= 100 and 0 < age["scale"] < 82  # searched within the bounds
    assert all(c["indicator"] for c in m.preprocessor.columns_)  # not read from the data
    assert len(m.history["epsilon"]) == 2
    from lepton_nn.risk import card as model_card
    from lepton_nn.risk.model_card import privacy_section

    privacy_section(m)  # the Privacy section of the model card (write_card adds it too)
    facts = m.card["sections"]["Privacy"]["facts"]
    assert facts["epsilon"] == card["epsilon"] and facts["delta"] == card["delta"]
    assert facts["accountant"] == "rdp" and facts["steps"] == card["steps"] > 0
    assert facts["noise_multiplier"] == card["noise_multiplier"] > 0
    assert facts["clipping_norm"] == 1.0 and facts["sampling_rate"] == pytest.approx(60 / 600)
    assert facts["preprocessing_epsilon"] == pytest.approx(0.3)
    rows = dict(map(tuple, m.card["sections"]["Privacy"]["table"]["rows"]))
    assert rows["Records"] == "public categories" and rows["Home"].startswith("DP histogram")
    path = tmp_path / "m.lnn"
    save(m, path)
    back = load(path)
    assert back.privacy_card["epsilon"] == pytest.approx(card["epsilon"])
    md = model_card.to_markdown(back.card)
    assert "## Privacy" in md and f"- **epsilon**: {card['epsilon']:.4g}" in md
    from lepton_nn.cli import main

    m.card = None  # saved without a card: info --card still shows the privacy record
    save(m, tmp_path / "bare.lnn")
    assert main(["info", str(tmp_path / "bare.lnn"), "--card"]) == 0
    assert f"- **epsilon**: {card['epsilon']:.4g}" in capsys.readouterr().out
    plain = TabularModel(epochs=1, seed=0, positive="bad", validation_split=0.0).fit(table)
    assert privacy_section(plain).card is None  # not trained privately: no section

    # bounds_scaling="range": the bounds alone scale the column, and spend nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priv = Privacy(3.0, 1e-5, bounds=bounds, categories=cats, bounds_scaling="range")
        m = TabularModel(epochs=1, batch_size=60, seed=0, positive="bad", privacy=priv).fit(table)
    assert m.privacy_card["preprocessing"]["columns"]["Age"] == "public bounds [18, 100]"
    age = next(c for c in m.preprocessor.columns_ if c["name"] == "Age")
    assert (age["center"], age["scale"]) == (59.0, 41.0)
    with pytest.raises(ValueError, match="bounds_scaling"):
        Privacy(3.0, bounds_scaling="minmax")


def test_private_scale_of_a_mostly_zero_column_stays_sane():
    """Debt is 0 in three rows of four: its DP quartile range is a few units at best, which
    would put the other rows thousands of units out; with public bounds the scale is at
    least 1 % of their width."""
    import warnings

    from lepton_nn import datasets
    from lepton_nn.tabular import TabularModel

    table = datasets.load_credit().take(np.arange(400))
    for seed in range(6):
        priv = Privacy(3.0, 1e-5, bounds={"Debt": (0, 30000)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = TabularModel(epochs=1, batch_size=50, seed=seed, positive="bad", privacy=priv)
            m.fit(table)
        debt = next(c for c in m.preprocessor.columns_ if c["name"] == "Debt")
        assert 300 <= debt["scale"] <= 30000 and 0 <= debt["center"] <= 30000


def test_private_model_file_holds_no_exact_training_statistics(tmp_path):
    """The training profile (deciles of every column, the approved rows' medians) and a
    regression target's mean and spread are exact statistics of the training rows: a
    private fit writes neither (the target is scaled by public bounds, or not at all)."""
    import json
    import warnings
    import zipfile

    from lepton_nn import datasets, save
    from lepton_nn.tabular import TabularModel

    table = datasets.load_credit().take(np.arange(300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = TabularModel(epochs=1, batch_size=50, seed=0, positive="bad", privacy=Privacy(3.0))
        m.fit(table)
    assert m.profile is None
    save(m, tmp_path / "p.lnn")
    with zipfile.ZipFile(tmp_path / "p.lnn") as z:
        manifest = json.loads(z.read(next(n for n in z.namelist() if n.endswith(".json"))))
    assert "profile" not in manifest and "privacy" in manifest
    with pytest.raises(Exception, match="no training profile"):
        from lepton_nn.risk import monitor

        monitor(tmp_path / "p.lnn", table)

    r = np.random.default_rng(0)
    cols = {"a": r.normal(size=200), "b": r.normal(size=200)}
    y = 50 + 10 * cols["a"] + r.normal(size=200)
    kw = dict(epochs=1, batch_size=50, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bare = TabularModel(**kw, privacy=Privacy(3.0)).fit(cols, y)
        public = TabularModel(**kw, privacy=Privacy(3.0, target_bounds=(0, 100))).fit(cols, y)
    assert bare.target_scale == (0.0, 1.0) and public.target_scale == (50.0, 50.0)
    assert bare.privacy_card["target_scaling"] == "not scaled"
    assert public.privacy_card["target_scaling"] == "public bounds [0, 100]"
    plain = TabularModel(**kw).fit(cols, y)
    assert plain.target_scale == pytest.approx((y.mean(), y.std()))
    with pytest.raises(ValueError, match="target_bounds"):
        Privacy(3.0, target_bounds=(1, 1))
