"""Crash-safe files: write beside the target then rename, and one writer at a time.

    with file_lock(target):            # blocks while another process holds it
        with atomic_path(target) as tmp:
            write(tmp)                 # any exception: tmp is removed, target untouched
        # here target is the complete new file (os.replace is atomic on POSIX)

Readers never take the lock: thanks to ``os.replace`` they see either the old
complete file or the new complete file, never half of one. The lock only
stops two first runs from both downloading and converting; the second waits,
then finds the first one's file.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def file_lock(target):
    """Hold an exclusive ``fcntl.flock`` on ``<target>.lock`` for the duration of the block."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
