"""Sample photos from opencv-python's source archive: real fetch, extraction rules, damage, races.

The real archive (95 MB) is fetched once into the default cache; tests that
simulate failures use a temporary MINIVGG_HOME and a small fake archive with
the same layout, built here from the real cached photos.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import weights.samples as samples
from minivgg.image import rgb_to_net
from weights import WeightsError
from weights.fetch import sha256_of


@pytest.fixture(scope="module")
def real_samples():
    """{file name: bytes} of the two known photos, from the real default cache."""
    return {name: samples.sample_path(Path(name).stem).read_bytes() for name in samples.KNOWN_SHA256}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVGG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_known_photos_are_there_and_checked(real_samples):
    for name, expected in samples.KNOWN_SHA256.items():
        path = samples.sample_path(Path(name).stem)
        assert path.name == name and sha256_of(path) == expected
    leuven = samples.sample_path("leuvenA")
    assert samples.sample_path("leuven") == leuven == samples.sample_path("leuvenA.jpg")
    names = samples.sample_names()
    assert {"starry_night", "leuvenA", "leuvenB", "fruits", "baboon", "messi5"} <= set(names)
    assert "choriginal" not in names                             # samples/data/aruco/ is a subfolder
    assert len(names) > 50
    manifest = json.loads((samples.samples_dir() / "manifest.json").read_text())
    assert all(Path(name).suffix in (".jpg", ".png") for name in manifest["files"])


def test_leuven_gives_the_reference_input(reference_dir):
    """The oracle's content image is leuvenA.jpg resized to 64x48, Pillow bicubic."""
    with Image.open(samples.sample_path("leuven")) as image:
        rgb = np.asarray(image.convert("RGB").resize((64, 48), Image.Resampling.BICUBIC))
    oracle = np.load(reference_dir / "vgg19_activations.npz")
    np.testing.assert_array_equal(rgb_to_net(rgb, dtype="float64"), oracle["input"])


def test_unknown_name_suggests_and_lists():
    with pytest.raises(WeightsError, match=r"no sample image 'stary_night'; did you mean 'starry_night'\? "
                                           r"available: .*fruits.*leuven, leuvenA"):
        samples.sample_path("stary_night")


def fake_archive(tmp_path, real_samples, starry=None) -> bytes:
    """A small .tar.gz laid out like the opencv sdist, with members that must and must not be kept."""
    members = {samples.MEMBER_PREFIX + name: data for name, data in real_samples.items()}
    if starry is not None:
        members[samples.MEMBER_PREFIX + "starry_night.jpg"] = starry
    members.update({
        samples.MEMBER_PREFIX + "tiny.png": b"\x89PNG tiny",
        samples.MEMBER_PREFIX + "aruco/choriginal.jpg": b"in a subfolder",
        samples.MEMBER_PREFIX + "notes.txt": b"not an image",
        "opencv-python-4.10.0.84/opencv/modules/other/data/x.jpg": b"elsewhere",
    })
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(samples.MEMBER_PREFIX + "link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return stream.getvalue()


def fake_pip(archive: bytes, delay: float = 0.0):
    """Stands in for pip: writes ``archive`` under the sdist's name; records calls and folders."""
    calls, folders = [], []

    def download(requirement, dest, extra_args=(), ways_out=""):
        calls.append((requirement, tuple(extra_args)))
        folders.append(Path(dest))
        time.sleep(delay)
        (Path(dest) / samples.ARCHIVE).write_bytes(archive)
        return Path(dest) / samples.ARCHIVE
    download.calls, download.folders = calls, folders
    return download


def use_fake_archive(monkeypatch, archive: bytes, delay: float = 0.0):
    pip = fake_pip(archive, delay)
    monkeypatch.setattr(samples, "pip_download", pip)
    monkeypatch.setattr(samples, "ARCHIVE_SHA256", sha256_of(archive))
    return pip


def test_extraction_keeps_only_top_level_images(home, tmp_path, monkeypatch, capsys, real_samples):
    pip = use_fake_archive(monkeypatch, fake_archive(tmp_path, real_samples))
    assert samples.sample_names() == ["leuvenA", "starry_night", "tiny"]
    assert pip.calls == [("opencv-python==4.10.0.84", ("--no-binary", "opencv-python"))]
    assert sorted(p.name for p in (home / "samples").iterdir()) == \
        ["leuvenA.jpg", "manifest.json", "manifest.json.lock", "starry_night.jpg", "tiny.png"]
    assert not pip.folders[0].exists()                          # the archive was deleted
    assert capsys.readouterr().err.count("minivgg: downloading opencv-python==4.10.0.84") == 1
    manifest = json.loads((home / "samples" / "manifest.json").read_text())
    assert manifest["files"]["tiny.png"] == sha256_of(b"\x89PNG tiny")


def test_damaged_sample_is_detected_and_fetched_again(home, tmp_path, monkeypatch, capsys, real_samples):
    pip = use_fake_archive(monkeypatch, fake_archive(tmp_path, real_samples))
    path = samples.sample_path("starry_night")
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert sha256_of(samples.sample_path("starry_night")) == samples.KNOWN_SHA256["starry_night.jpg"]
    assert "is missing or damaged" in capsys.readouterr().err and len(pip.calls) == 2
    (home / "samples" / "leuvenA.jpg").unlink()
    assert sha256_of(samples.sample_path("leuven")) == samples.KNOWN_SHA256["leuvenA.jpg"]
    assert len(pip.calls) == 3
    samples.sample_path("leuven")
    assert len(pip.calls) == 3


def test_archive_checksum_mismatch_refuses_with_both_hashes(home, tmp_path, monkeypatch, real_samples):
    archive = fake_archive(tmp_path, real_samples)
    monkeypatch.setattr(samples, "pip_download", fake_pip(archive))
    with pytest.raises(WeightsError) as error:
        samples.sample_path("starry_night")
    assert samples.ARCHIVE_SHA256 in str(error.value) and sha256_of(archive) in str(error.value)
    assert not (home / "samples" / "manifest.json").exists()


def test_known_photo_mismatch_refuses_with_both_hashes(home, tmp_path, monkeypatch, real_samples):
    use_fake_archive(monkeypatch, fake_archive(tmp_path, real_samples, starry=b"a forgery"))
    with pytest.raises(WeightsError) as error:
        samples.sample_path("starry_night")
    assert samples.KNOWN_SHA256["starry_night.jpg"] in str(error.value)
    assert sha256_of(b"a forgery") in str(error.value)
    assert not (home / "samples" / "manifest.json").exists()


def test_two_first_uses_at_once_download_once(home, tmp_path, monkeypatch, real_samples):
    pip = use_fake_archive(monkeypatch, fake_archive(tmp_path, real_samples), delay=0.5)
    paths, errors = [], []

    def first_use():
        try:
            paths.append(samples.sample_path("starry_night"))
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(paths) == 2 and len(pip.calls) == 1
    assert sha256_of(paths[0]) == samples.KNOWN_SHA256["starry_night.jpg"]


def test_no_network_names_the_ways_out(home, monkeypatch):
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(WeightsError, match=r"pip could not download opencv-python==4\.10\.0\.84.*"
                                           r"package index \(PyPI\).*image files of your own"):
        samples.sample_path("starry_night")
