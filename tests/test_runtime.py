"""The NumPy-only inference runtime: plans equal ``model(x)``, raw-row pipelines, import floor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import PKG_PARENT

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.backend import get_backend, use_backend
from lepton_nn.errors import DataError, LeptonError, ModelFormatError, ShapeError
from lepton_nn.io import module_to_lnn
from lepton_nn.runtime.format import read_lnn, write_lnn
from lepton_nn.runtime.plan import SparseDenseStep

ROOT = str(PKG_PARENT)  # where the imported lepton_nn lives
BATCHES = (0, 1, 7, 256)


def _built(model: nn.Module, shape: tuple) -> nn.Module:
    model.build((None, *shape))
    model.eval()
    model(np.zeros((1, *shape), model.dtype))  # a bare Dense's build() records no input shape
    return model


def _archs():
    L.set_seed(3)
    yield (
        "mlp-softmax",
        _built(
            nn.Sequential([nn.Dense(32, "relu"), nn.Dense(16, "tanh"), nn.Dense(5, "softmax")]),
            (12,),
        ),
        (12,),
    )
    yield (
        "layers-and-dropout",
        _built(
            nn.Sequential(
                [
                    nn.Dense(24),
                    nn.ReLU(),
                    nn.Dropout(0.5),
                    nn.Dense(24, use_bias=False),
                    nn.Sigmoid(),
                    nn.Dense(8),
                    nn.GELU(),
                    nn.Dense(4),
                    nn.Tanh(),
                    nn.Activation("log_softmax"),
                ]
            ),
            (10,),
        ),
        (10,),
    )
    yield (
        "flatten-first",
        _built(nn.Sequential([nn.Flatten(), nn.Dense(16, "gelu"), nn.Dense(3, "sigmoid")]), (3, 4)),
        (3, 4),
    )
    yield (
        "nested",
        _built(
            nn.Sequential([nn.Sequential([nn.Dense(9, "relu"), nn.Dense(7)]), nn.Softmax()]), (5,)
        ),
        (5,),
    )
    yield "bare-dense", _built(nn.Dense(6, "relu"), (4,)), (4,)
    yield (
        "float64",
        _built(nn.Sequential([nn.Dense(16, "relu"), nn.Dense(2)]).astype("float64"), (6,)),
        (6,),
    )


ARCHS = list(_archs())


def _more_archs():
    """Convolution, pooling, normalization and recurrent layers (when lepton_nn.nn has them)."""
    conv = pytest.importorskip("lepton_nn.nn.conv")
    norm = pytest.importorskip("lepton_nn.nn.norm")
    rec = pytest.importorskip("lepton_nn.nn.recurrent")
    L.set_seed(8)
    yield (
        "cnn",
        _built(
            nn.Sequential(
                [
                    conv.Conv2D(4, 3, padding="same", activation="relu"),
                    norm.BatchNorm(),
                    conv.MaxPool2D(2),
                    conv.Conv2D(6, (2, 3), stride=(1, 2), dilation=1),
                    conv.AvgPool2D(2, stride=1, padding=1, count_include_pad=False),
                    conv.Conv2D(5, 1, activation="tanh"),
                    nn.Flatten(),
                    nn.Dense(7),
                    norm.LayerNorm(),
                    nn.Dense(3, "softmax"),
                ]
            ),
            (2, 9, 10),
        ),
        (2, 9, 10),
    )
    yield (
        "gap",
        _built(
            nn.Sequential(
                [conv.Conv2D(3, 2, activation="gelu"), conv.GlobalAvgPool2D(), nn.Dense(2)]
            ),
            (1, 5, 5),
        ),
        (1, 5, 5),
    )
    yield (
        "cnn-pool",  # convolutions with the max pool folded in (gelu, overlapping windows)
        _built(
            nn.Sequential(
                [
                    conv.Conv2D(4, 3, padding="same", activation="gelu"),
                    conv.MaxPool2D(3, stride=2, padding=1),
                    conv.Conv2D(5, 3, padding="same", activation="relu"),
                    conv.MaxPool2D(2),
                    nn.Flatten(),
                    nn.Dense(3),
                ]
            ),
            (2, 12, 11),
        ),
        (2, 12, 11),
    )
    yield (
        "cnn-bn",  # conv -> BatchNorm -> ReLU -> max pool, and Dense -> BatchNorm -> ReLU
        _built(
            nn.Sequential(
                [
                    conv.Conv2D(4, 3, padding="same"),
                    norm.BatchNorm(),
                    nn.ReLU(),
                    conv.MaxPool2D(2),
                    nn.Flatten(),
                    nn.Dense(6),
                    norm.BatchNorm(),
                    nn.Activation("tanh"),
                    nn.Dense(3),
                ]
            ),
            (2, 8, 6),
        ),
        (2, 8, 6),
    )
    yield "lstm", _built(nn.Sequential([rec.LSTM(6), nn.Dense(2)]), (5, 3)), (5, 3)
    yield (
        "bigru-seq",
        _built(
            nn.Sequential(
                [rec.GRU(4, return_sequences=True, bidirectional=True), nn.Flatten(), nn.Dense(2)]
            ),
            (4, 3),
        ),
        (4, 3),
    )
    yield (
        "rnn-bn",
        _built(
            nn.Sequential([rec.SimpleRNN(5, return_sequences=True), rec.LSTM(3), norm.BatchNorm()]),
            (6, 2),
        ),
        (6, 2),
    )


NAMES = ["cnn", "gap", "lstm", "bigru-seq", "rnn-bn", "cnn-chunks", "cnn-pool", "cnn-pool-2t"]
NAMES += ["cnn-bn"]


@pytest.mark.parametrize("name", NAMES)
def test_conv_norm_recurrent_layers(tmp_path, monkeypatch, name):
    threads = 1
    if name in ("cnn-chunks", "cnn-pool-2t"):  # a few images at a time (1 or 2 per chunk)
        import lepton_nn.runtime.steps_conv as steps

        monkeypatch.setattr(steps, "CONV_CHUNK_BYTES", 2000)
        monkeypatch.setattr(steps, "threads_for", lambda flops, tasks: min(2, tasks))
        name, threads = name[: -len("-chunks")] if name == "cnn-chunks" else "cnn-pool", 2
    model, shape = {n: (m, s) for n, m, s in _more_archs()}[name]
    for layer in model.modules():  # give BatchNorm statistics other than 0 and 1
        if type(layer).__name__ == "BatchNorm":
            rng = np.random.default_rng(0)
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
            layer.weight.data[...] = rng.uniform(0.5, 2, layer.weight.shape)
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn", threads=threads)
    if name == "cnn-pool":  # each max pool runs inside the convolution before it
        assert served.describe().count("max pool ->") == 2  # (one line when chained)
    if name == "cnn-bn":  # BatchNorm, activation and pool folded into the step before them
        lines = served.describe().splitlines()  # a header, then the steps
        assert (
            len(lines) == 1 + 4
        )  # conv (+ norm, relu, pool), flatten, dense (+ norm, tanh), dense
        assert "batch norm" not in served.describe() and "max pool ->" in lines[1]
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-5, atol=2e-6)


def test_threaded_conv_plans_hold_blas_to_one_thread(tmp_path, monkeypatch):
    """A plan whose im2col chunk kernels call BLAS on several threads keeps NumPy's BLAS on
    one thread while it runs (its workers would spin on the same cores) and gives the count
    back after; a plan calling no BLAS from its threads (the direct convolution) leaves the
    count alone (setting it costs tens of us a call)."""
    from lepton_nn.backend import threads as T
    from lepton_nn.runtime import steps_conv as steps

    L.set_seed(0)
    layers = [nn.Conv2D(16, 3, padding="same"), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(10)]
    model, shape = _built(nn.Sequential(layers), (3, 32, 32)), (3, 32, 32)  # 13 chunks
    L.save(model, tmp_path / "m.lnn")
    x = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    blas = T._the_blas()
    if blas.get is None:
        pytest.skip("NumPy's BLAS thread count cannot be set here")
    before = blas.get()
    blas.set(2)
    try:
        for direct in (False, True):
            seen = []
            if not direct:
                monkeypatch.setattr(steps.ConvStep, "_direct", lambda self, ctx: False)
            for threads in (2, 1):
                served = rt.load(tmp_path / "m.lnn", threads=threads)
                plan = served.plan_for(64)
                names = [a[0] if a and isinstance(a[0], str) else getattr(f, "__name__", "")
                         for f, a, *_ in plan.head + plan.tail]  # fmt: skip
                direct_names = {"conv2d_direct_forward", "_conv_direct_chain_threads"}
                uses_direct = bool(direct_names & set(names))
                hold = threads == 2 and not uses_direct
                assert plan.hold_blas == hold
                plan.tail.append((lambda s=seen: s.append(blas.get()), ()))
                got, want = served.predict(x), model(x).data
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
                assert blas.get() == 2
                assert seen[-1] == (1 if hold else 2)
            monkeypatch.undo()
    finally:
        blas.set(before)


@pytest.mark.parametrize("name, model, shape", ARCHS, ids=[a[0] for a in ARCHS])
def test_predict_equals_model_call(tmp_path, name, model, shape):
    path = tmp_path / f"{name}.lnn"
    L.save(model, path)
    served = rt.load(path)
    assert served.input_shape == (None, *shape)
    for n in BATCHES:
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(model.dtype)
        if n == 0:  # nn.Flatten cannot reshape an empty batch: compare with an empty slice
            want = model(np.zeros((1, *shape), model.dtype)).data[:0]
        else:
            want = model(x).data
        got = served.predict(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_one_plans_use_the_packed_chain_or_transposed_weight_and_agree(tmp_path):
    # compiled: every batch runs the fp32 Dense layers as one dense_packed_forward call on
    # the weights' panels (W itself dropped); without the extension, batch 1 runs each as
    # np.dot(x, W^T stored row-major .T) (a faster gemv), larger batches np.matmul(x, W):
    # all give the same rows
    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.runtime.kernels import kernels

    model = nn.Sequential([nn.Dense(32, "relu"), nn.Dense(3)]).build((None, 20))
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn")
    fn, args, _ = served.plan_for(1).head[0]
    if type(kernels()).dense_packed_forward is not ReferenceBackend.dense_packed_forward:
        assert fn.__name__ == "dense_packed_forward"
        assert [p.shape for p in args[0]] == [(2, 20, 16), (1, 32, 16)]
        assert all(s.w is None for s in served.network.steps)  # one copy: the panels
    else:
        assert fn is np.dot and args[0].flags.f_contiguous and args[0].shape == (20, 32)
    with use_backend("reference"):
        fn, args, _ = rt.load(tmp_path / "m.lnn").plan_for(1).head[0]
        assert fn is np.dot and args[0].flags.f_contiguous and args[0].shape == (20, 32)
        # a plan bound later under the reference backend runs the packed twin
        x7 = np.random.default_rng(3).standard_normal((7, 20)).astype(np.float32)
        np.testing.assert_allclose(served.predict(x7), model(x7).data, rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32)
    rows = np.concatenate([served.predict(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(rows, served.predict(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows, model(x).data, rtol=1e-5, atol=1e-6)


def test_reference_backend_gives_the_same(tmp_path):
    _, model, shape = ARCHS[1]
    L.save(model, tmp_path / "m.lnn")
    x = np.random.default_rng(0).standard_normal((7, *shape)).astype(np.float32)
    with use_backend("reference"):
        served = rt.load(tmp_path / "m.lnn")
        got = served.predict(x)
    np.testing.assert_allclose(got, model(x).data, rtol=1e-5, atol=1e-6)


def test_plans_are_cached_per_batch_size_and_outputs_not_shared(tmp_path):
    _, model, shape = ARCHS[0]
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn", max_plans=2)
    assert set(served._plans) == {1}  # batch 1 is planned at load
    x7 = np.ones((7, *shape), np.float32)
    a = served.predict(x7)
    plan = served.plan_for(7)
    assert served.plan_for(7) is plan and set(served._plans) == {1, 7}
    b = served.predict(2 * x7)
    assert served.plan_for(7) is plan  # reused, not rebuilt
    assert not np.shares_memory(a, b) and not np.array_equal(a, b)
    np.testing.assert_allclose(a, model(x7).data, rtol=1e-5, atol=1e-6)
    served.predict(np.ones((3, *shape), np.float32))
    assert set(served._plans) == {7, 3}  # at most max_plans, the least recently used dropped
    served.predict(x7)  # 7 used again: 3 is now the least recently used
    served.predict(np.ones((5, *shape), np.float32))
    assert set(served._plans) == {7, 5} and served.plan_for(7) is plan


def test_input_checks(tmp_path):
    _, model, shape = ARCHS[0]
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn")
    with pytest.raises(ShapeError, match=r"\(batch, 12\).*\(3, 13\)"):
        served.predict(np.zeros((3, 13), np.float32))
    with pytest.raises(ShapeError, match=r"layer 'dense.*\(12,\)"):
        served.predict(np.zeros(12, np.float32))
    with pytest.raises(DataError, match="numeric"):
        served.predict(np.array([["a"] * 12]))
    # other numeric dtypes, lists and non-contiguous arrays are converted like model(x) does
    x = np.random.default_rng(0).standard_normal((5, 24))[:, ::2]
    want = model(x.astype(np.float32)).data
    np.testing.assert_allclose(served.predict(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.predict(x.tolist()), want, rtol=1e-5, atol=1e-6)


def test_predict_proba_of_a_bare_network(tmp_path):
    _, model, shape = ARCHS[0]
    L.save(model, tmp_path / "soft.lnn")
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    served = rt.load(tmp_path / "soft.lnn")
    np.testing.assert_allclose(served.predict_proba(x), model(x).data, rtol=1e-5, atol=1e-6)
    logits = _built(nn.Sequential([nn.Dense(3)]), (2,))
    L.save(logits, tmp_path / "logits.lnn")
    with pytest.raises(LeptonError, match="not a probability"):
        rt.load(tmp_path / "logits.lnn").predict_proba(np.zeros((1, 2), np.float32))


def test_threads_share_a_model_safely(tmp_path):
    _, model, shape = ARCHS[0]
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn")
    xs = [
        np.random.default_rng(i).standard_normal((3, *shape)).astype(np.float32) for i in range(8)
    ]
    want = [model(x).data for x in xs]
    errors = []

    def work(i):
        for _ in range(50):
            if not np.allclose(served.predict(xs[i]), want[i], rtol=1e-5, atol=1e-6):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- sparse


def _pruned_mlp(sparsity: float = 0.9, width: int = 64) -> nn.Module:
    L.set_seed(5)
    model = nn.Sequential([nn.Dense(width, "relu"), nn.Dense(32, "relu"), nn.Dense(4)])
    model = _built(model, (48,))
    rng = np.random.default_rng(0)
    for layer in model.layers[:2]:
        w = layer.weight.data
        w[rng.random(w.shape) < sparsity] = 0
    return model


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
def test_sparse_layers_run_sparse_or_dense_and_agree(tmp_path, mode):
    model = _pruned_mlp()
    L.save(model, tmp_path / "p.lnn")
    served = rt.load(tmp_path / "p.lnn", sparse=mode)
    steps = served.network.steps
    if mode == "dense":
        assert not any(isinstance(s, SparseDenseStep) for s in steps)
    else:
        assert [isinstance(s, SparseDenseStep) for s in steps] == [True, True, False]
    for n in BATCHES:
        x = np.random.default_rng(n).standard_normal((n, 48)).astype(np.float32)
        np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-5, atol=1e-5)
    if mode == "auto":  # the choice was measured, per batch bucket, and is reported
        assert set(steps[0].choice) == {(1, served.threads), (8, served.threads),
                                        (256, served.threads)}  # fmt: skip
        assert set(steps[0].choice.values()) <= {"sparse", "dense"}
        assert "density" in served.describe()


def test_sparse_steps_skip_the_per_call_csr_check(tmp_path):
    L.save(_pruned_mlp(), tmp_path / "p.lnn")
    served = rt.load(tmp_path / "p.lnn", sparse="sparse")
    step = served.network.steps[0]
    out = np.empty((2, 64), np.float32)
    [(fn, args)] = step._sparse_ops(np.zeros((2, 48), np.float32), out)
    # one prepared chain (its CSR structure checked once, at prepare), reused by every call
    assert (
        fn.__name__ == "sparse_chain_forward" and args[1] is step._sparse_ops(args[0], out)[0][1][1]
    )
    assert args[1].specs[0][:3] == (step.csr.indptr, step.csr.indices, step.csr.data)


@pytest.mark.parametrize("backend", ["cython", "reference"])
def test_a_run_of_sparse_layers_is_one_call(tmp_path, backend):
    """The two pruned layers join into one sparse_chain_forward call (the dense head stays
    dense), on the model's threads from 64 rows, with the dense model's results; also with
    the NumPy twins (whose bound methods are made anew at each lookup)."""
    if backend == "cython":
        pytest.importorskip("lepton_nn.kernels._sparse")
    model = _pruned_mlp()
    L.save(model, tmp_path / "p.lnn")
    with use_backend(backend):
        for threads in (1, 2, 3):
            served = rt.load(tmp_path / "p.lnn", sparse="sparse", threads=threads)
            for n in (1, 5, 64, 130):
                x = np.random.default_rng(n).standard_normal((n, 48)).astype(np.float32)
                got = served.predict(x)
                plan = served.plan_for(n)
                ops = [*plan.head, *plan.tail]
                names = [getattr(op[0], "__name__", "") for op in ops]
                assert names.count("sparse_chain_forward") == 1, names
                [chain] = [op[1][0] for op in plan.head if op[0].__name__ == "sparse_chain_forward"]
                assert len(chain.specs) == 2 and chain.threads == (threads if n >= 64 else 1)
                np.testing.assert_allclose(got, model(x).data, rtol=1e-5, atol=1e-5)


def test_pruned_model_saved_as_csr_is_smaller_and_identical(tmp_path):
    from lepton_nn.compress import save_compressed

    model = _pruned_mlp(0.0, width=1024)
    L.save(model, tmp_path / "dense.lnn")  # before pruning
    model = _pruned_mlp(0.9, width=1024)
    save_compressed(model, tmp_path / "sparse.lnn", min_sparsity=0.5)
    manifest, _ = read_lnn(tmp_path / "sparse.lnn")
    assert manifest["kind"] == "compressed"
    methods = [e["method"] for e in manifest["model"]["compression"]["layers"]]
    assert methods == ["csr", "csr"]
    ratio = os.path.getsize(tmp_path / "sparse.lnn") / os.path.getsize(tmp_path / "dense.lnn")
    assert ratio <= 0.25
    x = np.random.default_rng(0).standard_normal((9, 48)).astype(np.float32)
    served = rt.load(tmp_path / "sparse.lnn", sparse="sparse")
    np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-5, atol=1e-5)
    back = L.load(tmp_path / "sparse.lnn")  # the float model, weights made dense again
    for a, b in zip(back.parameters(), model.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


# --------------------------------------------------------------------------- bad files


def _manifest(model):
    section, arrays = module_to_lnn(model)
    return {"kind": "module", "model": section}, arrays


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda m, a: m["model"]["architecture"]["config"]["layers"].insert(
                0, {"class": "Conv9D", "config": {"name": "c"}}
            ),
            "'c' \\(Conv9D\\) is not supported",
        ),
        (lambda m, a: a.update({"params/layers.0.weight": np.zeros((3, 3), "f4")}), "expected"),
        (lambda m, a: a.pop("params/layers.1.bias"), "arrays missing"),
        (lambda m, a: m["model"]["params"].append("extra"), "arrays missing"),
        (lambda m, a: m["model"].update(input_shape=[None, 0]), "bad input_shape"),
        (lambda m, a: m["model"].update(dtype="int8"), "dtype"),
        (lambda m, a: m.update(kind="spreadsheet"), "kind"),
        (lambda m, a: m["model"].update(compression={"format": "zip"}), "compression"),
    ],
)
def test_damaged_files_raise_model_format_error(tmp_path, damage, match):
    _, model, _ = ARCHS[0]
    manifest, arrays = _manifest(model)
    damage(manifest, arrays)
    write_lnn(tmp_path / "bad.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match=match):
        rt.load(tmp_path / "bad.lnn")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"dilation": [2**40, 1], "padding": [2**41, 0]}, "larger than 1048576"),
        ({"stride": 2**21}, "larger than 1048576"),
        ({"kernel_size": [9, 9]}, "does not fit"),
        ({"padding": 9000}, "scratch values per sample"),
    ],
)
def test_hostile_conv_geometry_is_refused_at_load(tmp_path, change, match):
    model = {n: m for n, m, _ in _more_archs()}["gap"]
    manifest, arrays = _manifest(model)
    conv = manifest["model"]["architecture"]["config"]["layers"][0]["config"]
    conv.update(change)
    write_lnn(tmp_path / "bad.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match=match):
        rt.load(tmp_path / "bad.lnn")


def test_unused_array_is_refused(tmp_path):
    _, model, _ = ARCHS[0]
    manifest, arrays = _manifest(model)
    arrays["params/stray"] = np.zeros(3, "f4")
    manifest["model"]["params"].append("stray")
    write_lnn(tmp_path / "bad.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match="no layer uses"):
        rt.load(tmp_path / "bad.lnn")


# --------------------------------------------------------------------------- tabular


@pytest.fixture(scope="module")
def credit_pipeline():
    from lepton_nn.data import LabelEncoder, Preprocessor
    from lepton_nn.datasets import load_credit

    table = load_credit()
    pre = Preprocessor(missing_indicator=True).fit(table)
    enc = LabelEncoder(positive="bad").fit(table.target)
    L.set_seed(11)
    net = _built(
        nn.Sequential([nn.Dense(16, "relu"), nn.Dense(1, "sigmoid")]), (pre.n_features_out,)
    )
    section, arrays = module_to_lnn(net)
    manifest = {
        "kind": "tabular",
        "model": section,
        "preprocessing": json.loads(json.dumps(pre.to_config())),
        "labels": enc.to_config(),
        "task": "binary",
        "threshold": 0.4,
    }
    return table, pre, enc, net, manifest, arrays


def test_tabular_file_predicts_labels_from_raw_rows(tmp_path, credit_pipeline):
    table, pre, enc, net, manifest, arrays = credit_pipeline
    write_lnn(tmp_path / "credit.lnn", manifest, arrays)
    served = rt.load(tmp_path / "credit.lnn")
    sub = table.take(np.arange(40))
    p = net(pre.transform(sub)).data[:, 0]
    want_labels = enc.inverse_transform((p >= 0.4).astype(int))
    records = [{c: sub[c][i] for c in sub.columns} for i in range(40)]
    as_dict = {c: sub[c] for c in sub.columns}
    for rows in (sub, records, as_dict, sub.to_numpy()):
        np.testing.assert_array_equal(served.predict(rows), want_labels)
        proba = served.predict_proba(rows)
        np.testing.assert_allclose(proba[:, 1], p, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    one = served.predict(records[3])  # a single row as a dict
    assert one.tolist() == [want_labels[3]]
    assert served.predict(records[:0]).shape == (0,)
    with pytest.raises(DataError, match="row index 1, column 'Seniority'"):
        served.predict([records[0], dict(records[1], Seniority="ten")])


def test_runtime_preprocessing_is_the_data_preprocessor(credit_pipeline):
    from lepton_nn.runtime.preprocess import Preprocessing

    table, pre, *_ = credit_pipeline
    ours = Preprocessing.from_config(pre.to_config())
    np.testing.assert_array_equal(ours.transform(table), pre.transform(table))
    # unknown category -> zeros in its group; missing numeric -> the fill value's scaled value
    row = {c: table[c][0] for c in table.columns}
    row.update(Home="castle", Income="")
    x = ours.transform(row)
    assert x.shape == (1, pre.n_features_out)
    assert np.all(x[0, pre.groups_["Home"]] == 0)


def test_tabular_multiclass_and_regression(tmp_path):
    from lepton_nn.data import Preprocessor

    rng = np.random.default_rng(0)
    data = {"a": rng.standard_normal(30), "b": rng.choice(["x", "y", "z"], 30)}
    pre = Preprocessor().fit(data)
    L.set_seed(2)
    net = _built(nn.Sequential([nn.Dense(8, "relu"), nn.Dense(3)]), (pre.n_features_out,))
    section, arrays = module_to_lnn(net)
    base = {"model": section, "preprocessing": pre.to_config()}
    labels = {"classes": ["lo", "mid", "hi"], "positive": None}
    multi = {**base, "kind": "tabular", "task": "multiclass", "labels": labels}
    write_lnn(tmp_path / "multi.lnn", multi, arrays)
    served = rt.load(tmp_path / "multi.lnn")
    logits = net(pre.transform(data)).data
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        served.predict_proba(data), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert served.predict(data).tolist() == np.array(labels["classes"])[logits.argmax(1)].tolist()

    reg = _built(nn.Sequential([nn.Dense(1)]), (pre.n_features_out,))
    section, arrays = module_to_lnn(reg)
    reg_manifest = {**base, "kind": "tabular", "task": "regression", "model": section}
    write_lnn(tmp_path / "reg.lnn", reg_manifest, arrays)
    served = rt.load(tmp_path / "reg.lnn")
    np.testing.assert_allclose(served.predict(data), reg(pre.transform(data)).data[:, 0], rtol=1e-5)
    with pytest.raises(DataError, match="classification"):
        served.predict_proba(data)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_tabular_model_files_predict_as_tabular_model(tmp_path, task):
    from lepton_nn.datasets import load_credit
    from lepton_nn.tabular import TabularModel

    table = load_credit().take(np.arange(600))
    if task == "binary":
        fitted = TabularModel(hidden=(8,), epochs=3, threshold=0.35).fit(table)
    else:  # predict Amount from the other columns
        y = table["Amount"]
        cols = {c: table[c] for c in table.columns if c != "Amount"}
        fitted = TabularModel(hidden=(8,), epochs=3, task="regression").fit(cols, y)
        table = cols
    L.save(fitted, tmp_path / "t.lnn")
    served = rt.load(tmp_path / "t.lnn")
    if task == "binary":
        np.testing.assert_array_equal(served.predict(table), fitted.predict(table))
    else:  # float32 sums in another order than the trainer's matmul: a few ulps apart
        np.testing.assert_allclose(served.predict(table), fitted.predict(table), rtol=1e-5)
    if task == "binary":
        # float32 sums in another order than the trainer's matmul: a few ulps apart
        np.testing.assert_allclose(
            served.predict_proba(table), fitted.predict_proba(table), rtol=1e-5, atol=1e-7
        )
        records = [dict(zip(table.columns, r, strict=True)) for r in table.to_numpy()[:5]]
        np.testing.assert_array_equal(served.predict(records), fitted.predict(table)[:5])


def test_tabular_file_checks(tmp_path, credit_pipeline):
    *_, manifest, arrays = credit_pipeline
    for change, match in [
        ({"task": "ranking"}, "task"),
        ({"threshold": 2.0}, "threshold"),
        ({"labels": {"classes": ["a", "b", "c"]}}, "binary task with 3 classes"),
        ({"preprocessing": {"format": "other"}}, "not a Preprocessor config"),
    ]:
        write_lnn(tmp_path / "bad.lnn", {**manifest, **change}, arrays)
        with pytest.raises(ModelFormatError, match=match):
            rt.load(tmp_path / "bad.lnn")


# --------------------------------------------------------------------------- import floor


FORBIDDEN = ("lepton_nn.autograd", "lepton_nn.nn", "lepton_nn.ops", "lepton_nn.train", "numba")
FORBIDDEN_ALSO = ("lepton_nn.data", "lepton_nn.compress", "lepton_nn.io")


def _run_clean(code: str, env_extra: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("backend", [None, "numba"])
def test_runtime_imports_only_numpy_backend_and_extension(tmp_path, credit_pipeline, backend):
    table, *_, manifest, arrays = credit_pipeline
    write_lnn(tmp_path / "credit.lnn", manifest, arrays)
    _, model, _ = ARCHS[0]
    L.save(model, tmp_path / "mlp.lnn")
    rows = json.dumps(table.take(np.arange(3)).to_numpy().tolist())
    code = f"""
import sys, json
import numpy as np
import lepton_nn.runtime as rt
m = rt.load({str(tmp_path / "mlp.lnn")!r})
m.predict(np.zeros((2, 12), np.float32))
t = rt.load({str(tmp_path / "credit.lnn")!r})
print(json.dumps(t.predict(json.loads({rows!r})).tolist()))
print(json.dumps(sorted(sys.modules)))
"""
    out = _run_clean(code, {"LEPTON_BACKEND": backend} if backend else None).splitlines()
    assert len(json.loads(out[0])) == 3
    mods = json.loads(out[1])
    bad = [m for m in mods if m.startswith(FORBIDDEN + FORBIDDEN_ALSO)]
    assert bad == []
    assert "numpy" in mods and "lepton_nn.backend" in mods


def test_get_backend_without_jit_never_picks_numba():
    be = get_backend(allow_jit=False)
    assert be.name in ("cython", "reference")
    with use_backend("reference"):
        assert get_backend(allow_jit=False).name == "reference"


def _paths(obj, prefix=()):
    """Every (path, value) inside nested dicts and lists."""
    yield prefix, obj
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def test_fuzzed_manifests_fail_only_with_model_format_error(tmp_path):
    import copy
    import random

    from lepton_nn.compress import compressed_to_lnn, quantize

    _, cnn, _ = next(a for a in _more_archs() if a[0] == "cnn")
    pruned = _pruned_mlp(0.9)
    int8 = quantize(pruned, np.zeros((4, 48), "f4"), "static").layers
    compressed = compressed_to_lnn(pruned, {"layers.1": int8["layers.1"]}, min_sparsity=0.5)
    for model in (pruned, cnn, ARCHS[1][1]):
        manifest, arrays = compressed if model is pruned else _manifest(model)
        spots = [p for p, _ in _paths(manifest["model"]) if p]
        values = [None, -1, 0, 10**9, "x", "same", [], {}, 1.5, True, [1, 2], [None, 3]]
        rnd = random.Random(0)
        for _ in range(300):
            m = copy.deepcopy(manifest)
            path = rnd.choice(spots)
            target = m["model"]
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = rnd.choice(values)
            try:
                rt.from_manifest(m, arrays).predict(np.zeros((1, *model.input_shape[1:]), "f4"))
            except ModelFormatError:
                pass


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize(
    ("bidirectional", "sequences"), [(False, False), (True, False), (True, True)]
)
@pytest.mark.parametrize("int8", [False, True])
def test_recurrent_steps_in_chunks_and_reused_state(tmp_path, monkeypatch, cell, bidirectional,
                                                    sequences, int8):  # fmt: skip
    """Float and int8 weights: the whole sequence per direction in one fused call (the int8
    per-step path, its input product a few steps ahead, is checked against it in
    test_recurrent_q8.py). The states live in two slots: the plan agrees with the layers
    (int8: to its rounding), and a second run (the slots hold the first run's states) agrees
    with the first."""
    import lepton_nn.runtime.steps_recurrent as steps
    from lepton_nn.compress import quantize

    L.set_seed(0)
    layer = getattr(nn, cell)(8, bidirectional=bidirectional, return_sequences=sequences)
    model = _built(nn.Sequential([layer, nn.Flatten(), nn.Dense(3)]), (13, 4))
    x = np.random.default_rng(1).standard_normal((5, 13, 4)).astype(np.float32)
    L.save(quantize(model, x) if int8 else model, tmp_path / "m.lnn")
    monkeypatch.setattr(steps, "XZ_CHUNK_BYTES", 3 * 5 * 4 * 8 * steps.RecurrentStep.GATES[cell])
    served = rt.load(tmp_path / "m.lnn")
    first, want = served.predict(x), model(x).data
    if int8:
        assert np.linalg.norm(first - want) < 0.03 * np.linalg.norm(want)
    else:
        np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)
    served.predict(np.full_like(x, 3.0))  # other data in between: its states stay behind
    np.testing.assert_array_equal(served.predict(x), first)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("n", [1, 3, 4])
def test_recurrent_small_batches_match_the_layers(tmp_path, cell, n):
    """Small batches (row tiles of 2 or 4 and one row left) and 20 units (two blocks of 8
    and a partial block of 4): the fused sequence kernel agrees with the layers, forward
    and reverse, last state and whole sequence."""
    L.set_seed(0)
    make = getattr(nn, cell)
    layers = [make(20, return_sequences=True, bidirectional=True), make(20)]
    model = _built(nn.Sequential([*layers, nn.Dense(3)]), (11, 5))
    x = np.random.default_rng(n).standard_normal((n, 11, 5)).astype(np.float32)
    L.save(model, tmp_path / "m.lnn")
    got = rt.load(tmp_path / "m.lnn").predict(x)
    np.testing.assert_allclose(got, model(x).data, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_rows_split_over_threads_bit_identical(tmp_path, cell):
    """At 2 threads the plan cuts the batch (67 rows: odd ranges) into a range a thread,
    which the threads share step by step: the result has the bits of the 1-thread plan, with
    and without lengths, and agrees with the layers."""
    from lepton_nn.runtime.kernels import kernels

    L.set_seed(0)
    layer = getattr(nn, cell)(24, bidirectional=True)
    model = _built(nn.Sequential([layer, nn.Dense(3)]), (40, 6))
    x = np.random.default_rng(0).standard_normal((67, 40, 6)).astype(np.float32)
    lengths = np.random.default_rng(1).integers(1, 41, 67)
    L.save(model, tmp_path / "m.lnn")
    one, two = rt.load(tmp_path / "m.lnn", threads=1), rt.load(tmp_path / "m.lnn", threads=2)
    ops = two.plan_for(67).head + two.plan_for(67).tail
    split = [args for fn, args, *_ in ops if fn == kernels().recurrent_rows_threads]
    assert len(split) == 2 and all(args[8] == 2 for args in split)  # both directions, 2 threads
    bounds = split[0][6].tolist()  # a range a thread, covering every row once
    assert bounds == [0, 33, 67]
    np.testing.assert_array_equal(two.predict(x), one.predict(x))
    np.testing.assert_array_equal(two.predict(x, lengths=lengths), one.predict(x, lengths=lengths))
    np.testing.assert_allclose(one.predict(x), model(x).data, rtol=1e-5, atol=1e-5)


def _padded_reference(layers, tail, x, lengths):
    """The layers called with lengths=..., as a model using them would (Sequential cannot)."""
    h = x
    for layer in layers:
        h = layer(h, lengths=lengths)
    for layer in tail:
        h = layer(h)
    return h.data


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize(
    ("bidirectional", "sequences"), [(False, False), (True, False), (True, True)]
)
def test_recurrent_lengths_match_the_layers(tmp_path, cell, bidirectional, sequences):
    """predict(x, lengths=...) runs every recurrent layer as if called with the lengths: a
    stack of two, lengths from 0 to T; a padded step's values cannot matter."""
    L.set_seed(0)
    make = getattr(nn, cell)
    layers = [make(6, return_sequences=True, bidirectional=bidirectional),
              make(8, return_sequences=sequences, bidirectional=bidirectional)]  # fmt: skip
    tail = ([nn.Flatten()] if sequences else []) + [nn.Dense(3)]
    model = _built(nn.Sequential(layers + tail), (9, 4))
    x = np.random.default_rng(1).standard_normal((6, 9, 4)).astype(np.float32)
    lengths = np.array([9, 1, 0, 4, 8, 5])
    L.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn")
    got = served.predict(x, lengths=lengths)
    np.testing.assert_allclose(got, _padded_reference(layers, tail, x, lengths), atol=2e-6)
    x[np.arange(9)[None, :] >= lengths[:, None]] = 50.0  # only padding changes
    np.testing.assert_array_equal(served.predict(x, lengths=lengths), got)
    full = served.predict(x, lengths=np.full(6, 9))  # all steps real: as without lengths
    np.testing.assert_allclose(full, served.predict(x), rtol=1e-6, atol=1e-6)


def test_recurrent_lengths_int8_and_bad_lengths(tmp_path):
    from lepton_nn.compress import quantize

    L.set_seed(0)
    model = _built(nn.Sequential([nn.GRU(8, bidirectional=True), nn.Dense(3)]), (9, 4))
    x = np.random.default_rng(2).standard_normal((5, 9, 4)).astype(np.float32)
    lengths = np.array([9, 2, 0, 5, 7])
    L.save(quantize(model, x), tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    got = served.predict(x, lengths=lengths)
    want = _padded_reference(model.layers[:1], model.layers[1:], x, lengths)
    assert np.linalg.norm(got - want) < 0.03 * np.linalg.norm(want)
    x[np.arange(9)[None, :] >= lengths[:, None]] = -50.0
    np.testing.assert_array_equal(served.predict(x, lengths=lengths), got)
    with pytest.raises(ShapeError, match="5 ints"):
        served.predict(x, lengths=lengths[:4])
    with pytest.raises(ShapeError, match="ints"):
        served.predict(x, lengths=lengths.astype(float))
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        served.predict(x, lengths=lengths + 1)
    _, mlp, _ = ARCHS[0]
    L.save(mlp, tmp_path / "mlp.lnn")
    with pytest.raises(LeptonError, match="no recurrent layer"):
        rt.load(tmp_path / "mlp.lnn").predict(np.zeros((2, *mlp.input_shape[1:])), [1, 1])


def test_a_container_of_float64_layers_is_served_in_float64(tmp_path):
    """Sequential's own dtype stays float32 when its layers are made float64 one by one; the
    file takes the parameters' dtype, so the plan computes in float64."""
    L.set_seed(0)
    model = _built(
        nn.Sequential([nn.Dense(5, "tanh", dtype="float64"), nn.Dense(2, dtype="float64")]), (3,)
    )
    L.save(model, tmp_path / "m.lnn")
    x = np.random.default_rng(0).standard_normal((4, 3))
    got = rt.load(tmp_path / "m.lnn").predict(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model(x).data, rtol=1e-12, atol=1e-12)


def test_last_plan_shortcut_keeps_lengths_and_batch_sizes_apart(tmp_path):
    """forward() reuses the last plan it ran without looking it up: a call with lengths after
    one without (same batch size), another batch size, and a cache of one plan each get the
    plan they need (the results of a fresh model for each call alone)."""
    L.set_seed(0)
    model = _built(nn.Sequential([nn.GRU(5), nn.Dense(3)]), (7, 4))
    x = np.random.default_rng(3).standard_normal((4, 7, 4)).astype(np.float32)
    lengths = np.array([7, 2, 0, 5])
    L.save(model, tmp_path / "m.lnn")
    calls = [(x, None), (x, lengths), (x, None), (x[:2], None), (x, lengths), (x[:1], None)]
    want = [rt.load(tmp_path / "m.lnn").predict(a, lengths=n) for a, n in calls]
    assert not np.allclose(want[0], want[1])  # the lengths matter here
    for cache in (1, 8):
        served = rt.load(tmp_path / "m.lnn", max_plans=cache)
        for (a, n), w in zip(calls * 2, want * 2):
            np.testing.assert_array_equal(served.predict(a, lengths=n), w)
