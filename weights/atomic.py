"""Crash-safe files: write beside the target then rename, and one writer at a time.

    with building(target) as unfinished:   # blocks while another process builds target
        with atomic_path(target) as tmp:
            write(tmp)                     # any exception: tmp is removed, target untouched
        # here target is the complete new file (os.replace is atomic on POSIX)

Readers never take the lock: thanks to ``os.replace`` they see either the old
complete file or the new complete file, never half of one. The lock only
stops two first runs from both downloading and converting; the second waits,
then finds the first one's file.

Everything unfinished is named ``.<target name>.<random>.tmp`` (files from
``atomic_path``, folders from ``scratch_folder``) in the target's folder, and
nothing ever reads such a name back. A process killed with SIGKILL cannot
clean up, so the next holder of the lock removes them (``remove_leftovers``).
While a build runs, its lock file says so (``building``); the next holder that
finds that line knows the last build was killed, and can say so once.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def file_lock(target):
    """Hold an exclusive ``fcntl.flock`` on ``<target>.lock`` for the block; yields the open lock file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _rewrite(handle, text: str) -> None:
    """Replace the lock file's content with ``text`` (the file is opened for appending)."""
    handle.seek(0)
    handle.truncate()
    handle.write(text.encode())
    handle.flush()


@contextlib.contextmanager
def building(target):
    """Hold ``target``'s lock for a build; yields the line an unfinished earlier build left, or "".

    The lock file holds "building <target> (pid N, <time>)" while the block runs
    and is emptied when it ends, by an exception too: only a process killed
    outright (SIGKILL, a power cut) leaves the line behind.
    """
    with file_lock(target) as handle:
        handle.seek(0)
        unfinished = handle.read().decode("utf-8", "replace").strip()
        _rewrite(handle, f"building {target} (pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        try:
            yield unfinished
        finally:
            _rewrite(handle, "")


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target``.

    The temporary file is flushed to disk (fsync) before the rename so a power
    cut cannot leave a complete-looking name over incomplete data.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)                       # mkstemp makes 0600; a cache is not a secret
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def scratch_folder(beside):
    """Yield a new empty folder ``.<name>.<random>.tmp`` beside the file ``beside``; removed afterwards.

    For downloads that belong to a build of ``beside``: if the process is
    killed, the next build of ``beside`` finds the folder and removes it.
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stopped_note(unfinished: str, removed: list, action: str) -> str:
    """"an earlier run was stopped while <action>; removed what it left: ..." when there was one, else ""."""
    if not (unfinished or removed):
        return ""
    left = f"; removed what it left: {', '.join(removed)}" if removed else ""
    return f"an earlier run was stopped while {action}{left}"


def remove_leftovers(folder, prefix: str) -> list:
    """Remove the files and folders ``.<prefix>*.tmp`` in ``folder``; returns their names.

    Call it only while holding the lock under which every such name is
    written: then each one belongs to a process that died before finishing.
    """
    removed = []
    for entry in sorted(Path(folder).glob(f".{prefix}*.tmp")):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry.name)
    return removed
