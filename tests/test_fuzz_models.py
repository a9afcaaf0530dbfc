"""Fuzzing model files (issue 15): manifest values and file bytes through every loader.

The only allowed outcomes of loading (and then running on an input of the declared shape)
are a result or ``ModelFormatError``. Bounded here; ``benchmarks/fuzz_models.py`` runs the
same cases for longer and reports counts.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from _model_fuzz import HOSTILE, UNBOUNDED, file_bytes, models, mutate, outcome, paths  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAMES = ["cnn", "lstm", "embedding", "int8", "csr", "tabular"]
_FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def _allowed(result: dict) -> None:
    bad = {k: v for k, v in result.items() if v not in ("ok", "ModelFormatError")}
    assert not bad, bad


def test_unmutated_models_load_everywhere_they_should():
    for name in NAMES:
        result = outcome(*models()[name])
        assert result["lepton_nn.load"] == "ok", (name, result)
        if name != "embedding":  # the runtime does not run Embedding (yet): refused cleanly
            assert set(result.values()) == {"ok"}, (name, result)


@_FUZZ
@given(
    name=st.sampled_from(NAMES),
    pick=st.integers(0, 10**6),
    how=st.sampled_from(["replace", "replace", "delete", "append"]),
    value=st.one_of(
        st.sampled_from(HOSTILE + UNBOUNDED),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=4),
        st.lists(st.one_of(st.none(), st.integers(-2, 2**40)), max_size=4),
    ),
)
def test_manifest_values(name, pick, how, value):
    manifest, arrays = models()[name]
    all_paths = paths(manifest)
    _allowed(outcome(mutate(manifest, all_paths[pick % len(all_paths)], how, value), arrays))


@_FUZZ
@given(
    name=st.sampled_from(NAMES),
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_model_bytes(name, edits):
    data = bytearray(file_bytes(name))
    for where, byte in edits:
        data[where % len(data)] = byte
    _allowed(outcome({}, {}, bytes(data)))
