"""Sample photos (The Starry Night, a Leuven street, ...) from opencv-python's source archive.

OpenCV's ``samples/data`` folder ships inside the source archive of
``opencv-python==4.10.0.84`` on PyPI (95 MB). On first use it is downloaded
with pip, checked by sha256, streamed through once, and only the top-level
``.jpg``/``.png`` files of ``opencv/samples/data`` (not its subfolders) are
kept, in ``cache_dir()/samples/`` with a ``manifest.json`` of their sha256s.
The archive is deleted afterwards.

    sample_path("starry_night")  -> Path(".../samples/starry_night.jpg")
    sample_path("leuven")        -> the same as sample_path("leuvenA")
    sample_names()               -> ["Blender_Suzanne1", ..., "starry_night", ...]

Every ``sample_path`` call checks the file's sha256 against the manifest, so
a damaged or deleted file is noticed (one line on stderr) and fetched again.
Writes are atomic and locked like the weights cache (``weights.atomic``): the
archive is downloaded into a ``.manifest.json.*.tmp`` folder in ``samples/``,
each photo is written under a temporary name and renamed, and the manifest is
written last, so a fetch killed anywhere leaves no manifest that names a
missing or partial photo; the next fetch removes what it left, with one note.
A samples folder that cannot take the fetch (read-only, a file, full) raises
``CacheFolderError`` before the download.
"""
from __future__ import annotations

import difflib
import json
import re
import tarfile
import zlib
from pathlib import Path

from weights.atomic import atomic_path, building, remove_leftovers, scratch_folder, stopped_note
from weights.errors import WeightsError
from weights.fetch import check_sha256, pip_download, sha256_of
from weights.home import cache_dir, notice, writable_folder

OPENCV_REQUIREMENT = "opencv-python==4.10.0.84"
ARCHIVE = "opencv-python-4.10.0.84.tar.gz"
ARCHIVE_SHA256 = "72d234e4582e9658ffea8e9cae5b63d488ad06994ef12d81dc303b17472f3526"
MEMBER_PREFIX = "opencv-python-4.10.0.84/opencv/samples/data/"
KNOWN_SHA256 = {
    "starry_night.jpg": "accda7a19a90f22a4a922fdc8c230167d7abf5f80882171e2cee125c5f12481d",
    "leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
}
ALIASES = {"leuven": "leuvenA"}
SAMPLES_WAYS_OUT = ("Either let pip reach the package index (PyPI), or use image files of "
                    "your own instead of sample names.")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(jpg|png)", re.IGNORECASE)
_MAX_IMAGE_BYTES = 16 * 2**20
#: Free space a fetch needs in the samples folder: the 95 MB archive and the 10 MB of photos kept.
SAMPLES_BUILD_BYTES = 110 * 10**6


def samples_dir() -> Path:
    """``cache_dir()/samples``"""
    return cache_dir() / "samples"


def _manifest_path() -> Path:
    return samples_dir() / "manifest.json"


def _read_manifest():
    """The manifest's {file name: sha256}, or None when it is absent or not what we wrote."""
    try:
        manifest = json.loads(_manifest_path().read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or any(files.get(k) != v for k, v in KNOWN_SHA256.items()):
        return None
    if not all(isinstance(k, str) and _SAFE_NAME.fullmatch(k) and isinstance(v, str)
               for k, v in files.items()):
        return None
    return files


def _images_in(archive: Path):
    """Yield (name, bytes) of the top-level samples/data images in the tar.gz, streamed once."""
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if not member.name.startswith(MEMBER_PREFIX):
                    continue
                name = member.name[len(MEMBER_PREFIX):]
                if not (member.isfile() and _SAFE_NAME.fullmatch(name)
                        and member.size <= _MAX_IMAGE_BYTES):
                    continue                         # subfolders, other files, oddities
                data = tar.extractfile(member).read()
                yield name, data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise WeightsError(f"cannot read {archive.name}: {exc}") from None


def _extract_images(archive: Path, folder: Path) -> dict:
    """Stream the tar.gz once; write its top-level samples/data images to ``folder`` -> {name: sha256}."""
    files = {}
    for name, data in _images_in(archive):
        with atomic_path(folder / name) as tmp:      # an OSError here is the folder's (disk full)
            tmp.write_bytes(data)
        files[name] = sha256_of(data)
    for name, expected in KNOWN_SHA256.items():
        if name not in files:
            raise WeightsError(f"{ARCHIVE} has no {MEMBER_PREFIX}{name}")
        check_sha256(folder / name, expected, f"{ARCHIVE}: {name}")
    return files


def _fetch_samples() -> dict:
    """Download and check the archive, extract the images, write the manifest last -> files."""
    folder = samples_dir()
    notice(f"downloading {OPENCV_REQUIREMENT}'s source archive from PyPI (95 MB) once, for the "
           f"sample photos in it (The Starry Night, Leuven, ...); only those are kept, in {folder}.")
    with scratch_folder(_manifest_path()) as tmp:
        archive = pip_download(OPENCV_REQUIREMENT, tmp, ("--no-binary", "opencv-python"),
                               SAMPLES_WAYS_OUT)
        if archive.name != ARCHIVE:
            raise WeightsError(f"pip saved {archive.name}, expected {ARCHIVE}")
        check_sha256(archive, ARCHIVE_SHA256, ARCHIVE)
        files = _extract_images(archive, folder)
    manifest = {"source": f"{OPENCV_REQUIREMENT} (PyPI sdist), {MEMBER_PREFIX}*.jpg|png",
                "archive_sha256": ARCHIVE_SHA256, "files": dict(sorted(files.items()))}
    with atomic_path(_manifest_path()) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return files


def _intact(name: str, files: dict) -> bool:
    """True when the sample ``name`` is in the manifest and its file has the manifest's sha256."""
    path = samples_dir() / name
    return name in files and path.is_file() and sha256_of(path) == files[name]


def _recovery_note(unfinished: str, removed: list, damaged: str) -> str:
    """The one line said before a fetch that repairs something, or ""."""
    parts = [stopped_note(unfinished, removed, "fetching the sample images"),
             f"the cached sample {samples_dir() / damaged} is missing or damaged" if damaged else ""]
    parts = [part for part in parts if part]
    return "; ".join(parts) + "; fetching them again." if parts else ""


def _ensure_samples(damaged: str = "") -> dict:
    """The manifest's files, fetching them when absent (or when ``damaged`` says one is bad)."""
    files = None if damaged else _read_manifest()
    if files is not None:
        return files
    action = (f"cannot fetch the damaged sample {damaged} again" if damaged
              else "cannot cache the sample images")
    with writable_folder(samples_dir(), SAMPLES_BUILD_BYTES, action) as check_space:
        with building(_manifest_path()) as unfinished:
            files = _read_manifest()
            if files is not None and (not damaged or _intact(damaged, files)):
                return files                        # another process fetched or repaired them
            note = _recovery_note(unfinished, remove_leftovers(samples_dir(), ""), damaged)
            if note:
                notice(note)
            check_space()
            return _fetch_samples()


def _file_names(files: dict) -> dict:
    """{stem: file name}, plus the aliases."""
    names = {Path(name).stem: name for name in sorted(files)}
    names.update({alias: names[target] for alias, target in ALIASES.items() if target in names})
    return names


def sample_names() -> list:
    """Stems of the cached sample images, sorted (fetches them on first use)."""
    return sorted(Path(name).stem for name in _ensure_samples())


def sample_path(name: str) -> Path:
    """Path of the sample ``name`` ("starry_night", "leuven", "fruits.jpg", ...), checked by sha256."""
    files = _ensure_samples()
    names = _file_names(files)
    file_name = names.get(name) or (name if name in files else None)
    if file_name is None:
        close = difflib.get_close_matches(name, list(names), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise WeightsError(f"no sample image {name!r}; {hint}available: {', '.join(sorted(names))}")
    path = samples_dir() / file_name
    if not path.is_file() or sha256_of(path) != files[file_name]:
        files = _ensure_samples(damaged=file_name)
        if file_name not in files:
            raise WeightsError(f"sample {file_name} is no longer in {_manifest_path()}")
        check_sha256(path, files[file_name], f"sample {path}")
    return path
