"""Files out of a Debian package (``.deb``), in plain Python, and its download from Debian's archive.

A ``.deb`` is an ``ar`` archive: the 8 bytes ``!<arch>\\n``, then members, each a 60-byte header
(name 16, date 12, owner 6, group 6, mode 8, size 10 as ASCII decimal, ``\\x60\\n``) followed
by its bytes, padded to an even length. The installed files are in the member ``data.tar.xz``
(or ``.gz``, ``.bz2``, ``.zst``; ``tarfile`` reads all but the last).

    deb_files(path, {"./usr/share/x/a.rcc", ...}) -> {"./usr/share/x/a.rcc": bytes, ...}
    download(url, dest, what)                      # urllib, with a percentage on stderr
"""
from __future__ import annotations

import http.client
import sys
import tarfile
import time
import urllib.request
import zlib
from pathlib import Path

from weights.errors import WeightsError

_AR_MAGIC = b"!<arch>\n"
_HEADER_BYTES = 60


def _data_member(handle):
    """Seek ``handle`` (an open .deb) to its ``data.tar.*`` member -> (member name, size)."""
    if handle.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise WeightsError("not a Debian package (no ar archive header)")
    while True:
        header = handle.read(_HEADER_BYTES)
        if len(header) < _HEADER_BYTES:
            raise WeightsError("the Debian package has no data.tar member")
        if header[58:60] != b"`\n":
            raise WeightsError("damaged Debian package (bad ar member header)")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii", "replace").strip() or -1)
        if size < 0:
            raise WeightsError("damaged Debian package (bad ar member size)")
        if name.startswith("data.tar"):
            return name, size
        handle.seek(size + (size & 1), 1)             # members are padded to an even length


def deb_files(path, wanted) -> dict:
    """The files ``wanted`` (paths as in the package, e.g. "./usr/share/...") -> {path: bytes}."""
    wanted = set(wanted)
    found = {}
    try:
        with open(path, "rb") as handle:
            name, _ = _data_member(handle)
            if name.endswith(".zst"):
                raise WeightsError(f"{Path(path).name} keeps its files zstd-compressed ({name}), "
                                   "which Python's tarfile cannot read")
            with tarfile.open(fileobj=handle, mode="r|*") as tar:   # streams just this member
                for member in tar:
                    if member.name in wanted and member.isfile():
                        found[member.name] = tar.extractfile(member).read()
                        if len(found) == len(wanted):
                            break
    except WeightsError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, ValueError, OSError) as exc:
        raise WeightsError(f"cannot read {Path(path).name}: {exc}") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise WeightsError(f"{Path(path).name} has no {', '.join(missing)}")
    return found


def download(url: str, dest, what: str) -> Path:
    """Download ``url`` to the file ``dest`` with urllib (proxies from the environment apply),
    printing a percentage to stderr every few seconds -> ``dest``. Raises ``WeightsError`` when the
    server cannot be reached, answers with an error or the transfer is cut short; ``OSError`` only
    for ``dest`` itself (a full disk)."""
    dest = Path(dest)
    network_errors = (OSError, http.client.HTTPException)   # URLError, SSL errors, resets, ...
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except network_errors as exc:
        raise WeightsError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    with response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, time.monotonic()
        while True:
            try:
                block = response.read(2**20)
            except network_errors as exc:
                raise WeightsError(f"downloading {url} failed after {done / 1e6:.0f} MB: "
                                   f"{exc}") from None
            if not block:
                break
            out.write(block)                          # an OSError here is the disk's
            done += len(block)
            if total and time.monotonic() - shown > 3:
                print(f"minivgg: {what}: {100 * done / total:.0f}% of {total / 1e6:.0f} MB",
                      file=sys.stderr, flush=True)
                shown = time.monotonic()
    if total and done != total:
        raise WeightsError(f"the download of {url} was cut short ({done} of {total} bytes)")
    return dest
