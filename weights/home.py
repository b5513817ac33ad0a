"""The cache folder: where it is, and whether a build can write there.

    cache_dir()                            -> $MINIVGG_HOME or ~/.cache/minivgg (not created)
    with writable_folder(folder, need, "cannot cache X") as check_space:
        check_space()                      # once a build is certain: need bytes free?
        ...                                # build and write in folder

``writable_folder`` first makes sure the folder exists (creating it and its
parents, as pip does for its cache), is a folder and accepts a new file; then
any ``OSError`` inside the block (too little space, a disk that fills up
meanwhile, a folder made read-only) becomes a ``CacheFolderError`` whose one
line names the folder and what to do. Reading a complete cache needs none of
this: a read-only cache folder that already holds its files works.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

from weights.errors import CacheFolderError

_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def cache_dir() -> Path:
    """``$MINIVGG_HOME`` if set, else ``~/.cache/minivgg`` (not created here)."""
    home = os.environ.get("MINIVGG_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "minivgg"


def notice(message: str) -> None:
    """One line to stderr, prefixed so the user knows who is talking."""
    print(f"minivgg: {message}", file=sys.stderr, flush=True)


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where we may not even look."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _file_in_the_way(folder: Path):
    """The nearest of ``folder`` and its parents that exists and is not a folder, or None."""
    for candidate in (folder, *folder.parents):
        try:
            if candidate.exists() or candidate.is_symlink():
                return None if candidate.is_dir() else candidate
        except OSError:                             # a parent we may not look into
            return None
    return None


class _NotEnoughSpace(OSError):
    """Raised by the free-space check before a build (its strerror says how much is free)."""


def _folder_problem(folder: Path, exc: OSError, need: int) -> str:
    """One line for ``exc`` met while writing in ``folder``: what is wrong and what to do."""
    if isinstance(exc, _NotEnoughSpace):
        why = exc.strerror
    else:                                       # os's words: h5py's own text spans several lines
        why = " ".join((os.strerror(exc.errno) if exc.errno else str(exc)).split())
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        return (f"the cache folder {folder} cannot be created: {blocker} is a file, not a folder; "
                f"set MINIVGG_HOME to a folder, or move that file away")
    if exc.errno in _NOT_WRITABLE and not _is_dir(folder):
        return (f"the cache folder {folder} does not exist and cannot be created ({why}); create "
                f"it, or set MINIVGG_HOME to a writable folder")
    if exc.errno in _NOT_WRITABLE:
        return (f"the cache folder {folder} is not writable ({why}); make it writable, or set "
                f"MINIVGG_HOME to a writable folder")
    if exc.errno in _NO_SPACE:
        return (f"no space left in the cache folder {folder} ({why}; about {need / 1e6:.0f} MB are "
                f"needed); free some space, or set MINIVGG_HOME to a folder on a disk with room")
    return (f"cannot write in the cache folder {folder} ({why}); set MINIVGG_HOME to another "
            f"folder")


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed, then check that it is a folder and takes a new file."""
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    with tempfile.TemporaryFile(dir=folder):        # what os.access cannot see (root, ACLs, NFS)
        pass


def _check_space(folder: Path, need: int) -> None:
    """Raise ``_NotEnoughSpace`` when ``folder``'s disk has fewer than ``need`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise _NotEnoughSpace(errno.ENOSPC, f"{free / 1e6:.0f} MB free")


@contextlib.contextmanager
def writable_folder(folder, need: int, action: str):
    """Make sure ``folder`` exists and takes new files, run the block; ``OSError`` -> ``CacheFolderError``.

    Yields ``check_space()``, to call once a build is certain (under its lock,
    leftovers removed): it raises when fewer than ``need`` bytes are free. Not
    at entry, where a process about to wait for another one's build would
    count that build's temporary files against itself.
    action: what cannot be done, the start of the message ("cannot cache the VGG-19 weights").
    """
    folder = Path(folder)
    try:
        _check_writable(folder)
        yield lambda: _check_space(folder, need)
    except OSError as exc:
        raise CacheFolderError(f"{action}: {_folder_problem(folder, exc, need)}") from None
