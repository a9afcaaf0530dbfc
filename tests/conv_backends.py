"""The convolution tests' ``be`` fixture (``conv_backend``: import it into a test module):
every backend, and the compiled kernel's plain C loops too (``cython-portable``: what a CPU
without AVX2 runs), switched on for the test."""

from __future__ import annotations

import pytest

import lepton_nn.backend as backend

BACKENDS = backend.available()
PORTABLE = ["cython-portable"] if "cython" in BACKENDS else []


@pytest.fixture(params=BACKENDS + PORTABLE, name="be")
def conv_backend(request):
    name = request.param.removesuffix("-portable")
    with backend.use_backend(name) as b:
        if name == request.param:
            yield b
            return
        from lepton_nn.kernels import _conv

        _conv.conv2d_direct_portable(True)
        try:
            yield b
        finally:
            _conv.conv2d_direct_portable(False)
