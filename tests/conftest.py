"""Shared test settings.

``PKG_PARENT`` is the folder holding the *imported* ``lepton_nn`` package: the source tree in
development, ``site-packages`` after ``pip install .``. Subprocesses run there (and put it on
``PYTHONPATH``) so they import the same build as the tests, compiled kernels included, and
never a source checkout that shadows the installed package.
"""

from __future__ import annotations

from pathlib import Path

import lepton_nn

PKG_PARENT = Path(lepton_nn.__file__).resolve().parents[1]
