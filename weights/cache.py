"""minivgg's own HDF5 weights file, and the cache folder that holds it.

Layout of a cache file (``$MINIVGG_HOME/vgg19.h5``, default ``~/.cache/minivgg``):

    /conv1_1/weight   (64, 3, 3, 3)   float32, OIHW, cross-correlation
    /conv1_1/bias     (64,)           float32
    ...                               one group per row of ``weights.table``
    /conv5_4/bias     (512,)
    root attributes   format = "minivgg-weights-1", arrays_sha256 and attrs_sha256 (checksums
                      of the arrays and of the other attributes, see those functions),
                      channel_order "BGR", mean [103.939, 116.779, 123.68], input_range
                      "0..255", layout "OIHW cross-correlation", and where the numbers
                      came from (source, sha256s, and for the normalised network how).

Loading checks the layout exactly (no missing, extra or mis-shaped dataset)
and recomputes both checksums, so a damaged file is a ``WeightsError``
that ``load_or_build`` answers by building the file again. Files are written
with HDF5's newest format, whose metadata blocks carry their own checksums.

Faults ``load_or_build`` survives (``tests/test_faults.py`` runs each in real
processes): two first runs at once (one builds, the other waits on the lock,
then reads); a run killed anywhere in a build (the file is written under a
temporary name and renamed when complete; the next build removes what the
killed one left and says so in one line); a file truncated, bit-flipped or
replaced by another HDF5 file (rebuilt, with one line); a cache folder that is
read-only, a file, or full (``CacheFolderError``, one line naming the folder).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from weights.atomic import atomic_path, building, remove_leftovers, stopped_note
from weights.errors import WeightsError
from weights.home import cache_dir, notice, writable_folder  # noqa: F401 (cache_dir: still importable here)
from weights.table import VGG19_TABLE, check_params

FORMAT = "minivgg-weights-1"
INPUT_ATTRS = {
    "channel_order": "BGR",
    "mean": [103.939, 116.779, 123.68],
    "input_range": "0..255",
    "layout": "OIHW cross-correlation",
}


def arrays_sha256(params: dict, table=VGG19_TABLE) -> str:
    """sha256 over, for each layer in table order: name, then w and b as (shape, float32 bytes)."""
    digest = hashlib.sha256()
    for entry in table:
        digest.update(entry.name.encode())
        for array in params[entry.name]:
            array = np.ascontiguousarray(array, dtype="<f4")
            digest.update(repr(array.shape).encode())
            digest.update(array.data)
    return digest.hexdigest()


def attrs_sha256(attrs: dict) -> str:
    """sha256 of the attributes (all but ``attrs_sha256`` itself) as canonical JSON."""
    canonical = {key: value for key, value in attrs.items() if key != "attrs_sha256"}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def write_params_h5(path, params: dict, attrs: dict, table=VGG19_TABLE) -> None:
    """Write ``params`` and ``attrs`` (plus format, input convention, checksum) atomically to ``path``."""
    import h5py

    params = check_params(params, str(path), table)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as handle:
            for entry in table:
                w, b = params[entry.name]
                group = handle.create_group(entry.name)
                group.create_dataset("weight", data=w)
                group.create_dataset("bias", data=b)
            encoded = {key: _encode(value) for key, value in
                       {"format": FORMAT, **INPUT_ATTRS, **attrs,
                        "arrays_sha256": arrays_sha256(params, table)}.items()}
            encoded["attrs_sha256"] = np.bytes_(attrs_sha256({k: _decode(v) for k, v in encoded.items()}))
            for key, value in encoded.items():
                handle.attrs[key] = value


def _encode(value):
    """Python attribute -> fixed-size HDF5 value: str as fixed-length UTF-8 bytes, lists as arrays.

    Fixed-length strings live inside the (checksummed) object header; h5py's
    default variable-length strings would live in HDF5's global heap, which has
    no checksum, and a damaged global heap can make the HDF5 library loop forever.
    """
    if isinstance(value, str):
        return np.bytes_(value.encode("utf-8"))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return np.array([v.encode("utf-8") for v in value], dtype=bytes)
    return np.asarray(value)


def _decode(value):
    """HDF5 attribute -> plain Python (str for strings, list for arrays)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_layer(handle, entry, where: str):
    """Read /<name>/weight and /<name>/bias after checking their shape and dtype."""
    import h5py

    group = handle.get(entry.name)
    if not isinstance(group, h5py.Group) or set(group.keys()) != {"weight", "bias"}:
        raise WeightsError(f"{where}: {entry.name} should be a group holding exactly weight and bias")
    arrays = []
    for key, shape in (("weight", entry.shape), ("bias", entry.bias_shape)):
        dataset = group[key]
        if not isinstance(dataset, h5py.Dataset) or dataset.shape != shape or dataset.dtype != np.float32:
            raise WeightsError(f"{where}: {entry.name}/{key} should be float32 {shape}, found "
                               f"{getattr(dataset, 'dtype', '?')} {getattr(dataset, 'shape', '?')}")
        arrays.append(dataset[()])
    return tuple(arrays)


def read_params_h5(path, table=VGG19_TABLE) -> tuple:
    """Read a minivgg weights file -> (params {name: (w, b)}, attrs dict); ``WeightsError`` if bad."""
    import h5py

    where = str(path)
    try:
        with h5py.File(path, "r") as handle:
            attrs = {key: _decode(value) for key, value in handle.attrs.items()}
            if attrs.get("format") != FORMAT:
                raise WeightsError(f"{where}: not a minivgg weights file (format {attrs.get('format')!r})")
            names = [entry.name for entry in table]
            extra = sorted(set(handle.keys()) - set(names))
            if extra:
                raise WeightsError(f"{where}: unexpected groups {', '.join(extra)}")
            params = {entry.name: _read_layer(handle, entry, where) for entry in table}
    except WeightsError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... on damaged files
        raise WeightsError(f"{where}: cannot read HDF5 file ({type(exc).__name__}: {exc})") from None
    params = check_params(params, where, table)
    try:
        actual = attrs_sha256(attrs)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: damaged attributes ({exc})") from None
    if attrs.get("attrs_sha256") != actual:
        raise WeightsError(f"{where}: damaged, its attributes' sha256 is {actual}, "
                           f"expected {attrs.get('attrs_sha256')}")
    actual = arrays_sha256(params, table)
    if attrs.get("arrays_sha256") != actual:
        raise WeightsError(f"{where}: damaged, its arrays' sha256 is {actual}, "
                           f"expected {attrs.get('arrays_sha256')}")
    return params, attrs


def _read_checked(path, table, check) -> tuple:
    """``read_params_h5`` then ``check(attrs)`` (which raises ``WeightsError`` for a stale file)."""
    params, attrs = read_params_h5(path, table)
    if check is not None:
        check(attrs)
    return params, attrs


def file_bytes(table=VGG19_TABLE) -> int:
    """Bytes a cache file of ``table`` takes on disk: its float32 arrays plus 1 MB for HDF5 and attributes."""
    return sum(4 * (int(np.prod(e.shape)) + int(np.prod(e.bias_shape))) for e in table) + 2**20


def _recovery_note(path, unfinished: str, removed: list, damage) -> str:
    """The one line said before a rebuild: what was wrong with the last attempt or the file, or ""."""
    parts = [stopped_note(unfinished, removed, f"building {path}"),
             "" if damage is None else f"the cached file {path} is damaged or out of date ({damage})"]
    parts = [part for part in parts if part]
    return "; ".join(parts) + "; building it again." if parts else ""


def _build_and_write(path, build, table, check, damage, check_space):
    """Under ``path``'s lock: clear a killed build's leftovers (one note), build, write atomically.

    Returns (params, attrs) read from a good file another process built while
    this one waited for the lock, else None (this process built it).
    """
    with building(path) as unfinished:
        if path.exists():
            try:
                return _read_checked(path, table, check)
            except WeightsError as exc:
                damage = exc
        note = _recovery_note(path, unfinished, remove_leftovers(path.parent, path.name + "."), damage)
        if note:
            notice(note)
        check_space()
        params, attrs = build()
        write_params_h5(path, params, attrs, table)
    return None


def load_or_build(path, build, table=VGG19_TABLE, check=None, need=None,
                  what="the VGG-19 weights") -> tuple:
    """Read the cache file ``path``, building and writing it first when absent, damaged or stale.

    build: () -> (params, attrs), called at most once, under ``path``'s lock.
    check: optional (attrs) -> None, raising ``WeightsError`` when the file is stale.
    need: bytes the build needs in ``path``'s folder (default: the file itself).
    what: what the file caches, for messages.
    Returns (params, attrs). A damaged file or a killed earlier build is reported
    in one line and rebuilt; a second process arriving during the build waits
    for the lock, then reads. A folder that cannot take the build raises
    ``CacheFolderError`` (one line naming it) before anything is fetched.
    """
    path = Path(path)
    damage = None
    if path.exists():
        try:
            return _read_checked(path, table, check)
        except WeightsError as exc:
            damage = exc
    action = (f"cannot rebuild {path}, which is damaged or out of date" if damage is not None
              else f"cannot cache {what}")
    with writable_folder(path.parent, file_bytes(table) if need is None else need, action) as check_space:
        found = _build_and_write(path, build, table, check, damage, check_space)
    return found or _read_checked(path, table, check)       # read back what was written
