"""What a fresh install ships: small release extensions, the bundled data with its licences,
and a Numba cache that never writes into a site-packages folder that is not the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lepton_nn
from lepton_nn import kernels

# 2.45 MB before the pruned-layer chain (_sparse 0.17 -> 0.30 MB: batch-1 rows on ymm lanes with
# uint16 and int32 indices, the batch tiles, the pool job) and the int8 chain's new barrier
# (_qgemm +0.04 MB); the budget moved once, to 2.75 MB, on purpose
MAX_EXTENSION_BYTES = 2_750_000
PACKAGE = Path(lepton_nn.__file__).resolve().parent


def test_the_compiled_extensions_stay_under_2_75_mb():
    """Release builds carry no debug information (setup.py: -g0, linked with -s); with it the
    five extensions weighed 7.9 MB."""
    files = sorted((PACKAGE / "kernels").glob("_*.so")) + sorted(
        (PACKAGE / "kernels").glob("_*.pyd")
    )
    if not files:
        pytest.skip("no compiled extensions in this install (pure-Python fallback)")
    total = sum(f.stat().st_size for f in files)
    sizes = ", ".join(f"{f.name.split('.')[0]} {f.stat().st_size / 1e6:.2f} MB" for f in files)
    assert total < MAX_EXTENSION_BYTES, f"{total / 1e6:.2f} MB: {sizes}"


def test_the_package_data_is_declared_for_the_wheel():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for pattern in ('"datasets/*.csv"', '"datasets/*.csv.gz"', '"datasets/*.md"'):
        assert pattern in text
    for f in (PACKAGE / "datasets").iterdir():
        if f.suffix in (".csv", ".gz"):
            assert f.stat().st_size < 400_000, f.name  # small files only


def test_numba_caches_beside_the_sources_when_the_folder_is_ours(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    if hasattr(os, "getuid"):
        monkeypatch.setattr(os, "getuid", lambda: os.stat(kernels.__file__).st_uid)
    assert kernels.numba_cache_folder() is None


@pytest.mark.parametrize("why", ["read-only", "another user's"])
def test_numba_caches_in_a_per_user_folder_otherwise(why, monkeypatch, tmp_path):
    numba = pytest.importorskip("numba")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if why == "read-only":
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    elif hasattr(os, "getuid"):
        monkeypatch.setattr(os, "getuid", lambda: os.stat(kernels.__file__).st_uid + 1)
    else:
        pytest.skip("no user ids here")
    folder = kernels.numba_cache_folder()
    assert folder == str(tmp_path / "lepton_nn" / "numba")
    before = numba.config.CACHE_DIR
    with kernels.numba_cache():

        @numba.njit(cache=True)
        def twice(x):
            return 2 * x

    assert numba.config.CACHE_DIR == before  # put back for the user's own functions
    assert twice(21) == 42
    assert any(Path(folder).rglob("*.nbi")), "the kernel was not cached in the per-user folder"


def test_numba_cache_dir_set_by_the_user_wins(monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert kernels.numba_cache_folder() is None
