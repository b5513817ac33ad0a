"""A reader for PyTorch's legacy (pre-1.6, non-zip) ``torch.save`` files, without torch.

The stream, as ``torch.save(obj, f, _use_new_zipfile_serialization=False)`` writes it:

    pickle 1   the magic number 119547037146038801333356
    pickle 2   the protocol version 1001
    pickle 3   sys info: {"protocol_version": 1001, "little_endian": True, "type_sizes": {...}}
    pickle 4   the object; here a dict name -> tensor, each tensor pickled as
                 REDUCE(GLOBAL torch._utils._rebuild_tensor_v2,
                        (storage, storage_offset, size, stride, requires_grad, OrderedDict()))
               where ``storage`` is a *persistent id*, the tuple
                 ("storage", GLOBAL torch.<T>Storage, key, location, numel[, view_metadata])
    pickle 5   the list of storage keys, in the order their bytes follow
    then, for each key of pickle 5:
               numel as 8 bytes little-endian, then numel * itemsize raw little-endian bytes

A tensor is ``storage[offset + sum_k i_k * stride_k]`` for indices i_k < size_k
(strides in elements, not bytes).

Safety. Unpickling runs code named by the file, so every pickle goes through
two gates before anything is built:

1. ``_scan_pickle`` walks the opcodes with ``pickletools``' opcode table (which
   only parses) and refuses any opcode outside the small set a protocol-2
   ``torch.save`` emits, and any memo index larger than the number of opcodes
   (CPython's C unpickler sizes its memo by the largest index it sees, so a
   crafted ``LONG_BINPUT 2**31`` would otherwise ask for gigabytes). Lengths
   that point past the end of the data are refused here too.
2. ``_RestrictedUnpickler.find_class`` resolves exactly three kinds of global:
   ``torch._utils._rebuild_tensor_v2`` (to a local function that records the
   tensor's geometry and builds nothing), ``torch.<T>Storage`` (to a dtype
   marker) and ``collections.OrderedDict``. Any other global (``os.system``,
   ``builtins.eval``, ...) is refused before it is imported, let alone called.

Everything else (counts, sizes, offsets, strides against storage bounds,
trailing bytes) is checked before an array is made, and any failure, whatever
raised it, becomes one ``WeightsError``. Arrays are built last, with
``as_strided`` over the validated storage and copied out.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from weights.errors import WeightsError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage type -> little-endian NumPy dtype of its elements.
STORAGE_DTYPES = {
    "ByteStorage": "<u1", "CharStorage": "<i1", "ShortStorage": "<i2", "IntStorage": "<i4",
    "LongStorage": "<i8", "HalfStorage": "<f2", "FloatStorage": "<f4", "DoubleStorage": "<f8",
    "BoolStorage": "|b1",
}

# The opcodes a protocol-2 torch.save of tensors and plain containers can emit.
_ALLOWED_OPCODES = frozenset({
    "PROTO", "STOP", "MARK", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS",
    "GLOBAL", "REDUCE", "BINPERSID",
    "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT",
})
_MEMO_PUTS = frozenset({"BINPUT", "LONG_BINPUT"})
_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_MAX_DIMS = 32


class StorageType(NamedTuple):
    """What ``GLOBAL torch <T>Storage`` resolves to: the storage's name and element dtype."""

    name: str          # "FloatStorage"
    dtype: np.dtype    # little-endian float32


class StorageRef(NamedTuple):
    """A storage declared by a persistent id; its bytes come after the pickles."""

    key: str
    dtype: np.dtype
    numel: int


class TensorRef(NamedTuple):
    """A tensor's geometry over a storage (offset, size and stride in elements)."""

    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple


def _is_int(value) -> bool:
    """True for Python ints, False for bools (which pickle as ints but mean something else)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validate types, record geometry."""
    if not isinstance(storage, StorageRef):
        raise WeightsError(f"a tensor's storage must be a persistent storage id, "
                           f"found {type(storage).__name__}")
    if not (_is_int(storage_offset) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise WeightsError("a tensor needs an integer offset and tuples for size and stride")
    if not all(_is_int(v) for v in size + stride):
        raise WeightsError(f"tensor size {size!r} and stride {stride!r} must be integers")
    if not isinstance(requires_grad, bool) or backward_hooks or metadata:
        raise WeightsError("tensors with backward hooks or metadata are not supported")
    return TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can name only tensors, storages and OrderedDict (see module docstring)."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages   # key -> StorageRef, shared across the pickles of one file

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, np.dtype(STORAGE_DTYPES[name]))
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise WeightsError(f"refusing to load global {module:.60}.{name:.60}: a weights file may only "
                           f"name torch._utils._rebuild_tensor_v2, torch.<type>Storage and "
                           f"collections.OrderedDict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise WeightsError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise WeightsError(f"persistent id names no storage type: {storage_type!r:.80}")
        if not (isinstance(key, str) and isinstance(location, str) and _is_int(numel) and numel >= 0):
            raise WeightsError(f"malformed storage id {pid!r:.80}")
        if len(pid) == 6 and pid[5] is not None:
            raise WeightsError(f"storage {key!r} is a view of another storage; views are not supported")
        ref = StorageRef(key, storage_type.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise WeightsError(f"storage {key!r} is declared twice with different types or sizes")
        return ref


def _scan_pickle(data: bytes, start: int) -> int:
    """Check the pickle starting at ``start`` opcode by opcode (gate 1); return where it ends.

    Each opcode byte is looked up in ``pickletools.opcodes`` and refused unless
    allowed *before* its argument is parsed; arguments are parsed with
    pickletools' own readers, which check lengths against the data.
    """
    stream = io.BytesIO(data)
    stream.seek(start)
    count = 0
    while True:
        pos = stream.tell()
        code = stream.read(1)
        if not code:
            raise WeightsError(f"the data ends inside the pickle that starts at byte {start}")
        opcode = _OPCODES.get(code)
        if opcode is None or opcode.name not in _ALLOWED_OPCODES:
            raise WeightsError(f"unexpected pickle opcode {opcode.name if opcode else code!r} at byte {pos}")
        count += 1
        try:
            if opcode.name == "GLOBAL":                     # "module\nname\n", read as the unpickler does
                arg = [stream.readline() for _ in range(2)]
                if not all(line.endswith(b"\n") for line in arg):
                    raise ValueError("unterminated module or name")
            else:
                arg = opcode.arg.reader(stream) if opcode.arg is not None else None
        except Exception as exc:  # pickletools' readers raise ValueError and friends on bad data
            raise WeightsError(f"malformed {opcode.name} argument at byte {pos}: {exc}") from None
        if opcode.name in _MEMO_PUTS and arg > count:
            raise WeightsError(f"pickle memo index {arg} at byte {pos} is out of range")
        if opcode.name == "STOP":
            return stream.tell()


def _load_pickle(data: bytes, start: int, storages: dict):
    """Scan, then unpickle the pickle at ``start`` with the restricted unpickler -> (object, end)."""
    end = _scan_pickle(data, start)
    try:
        value = _RestrictedUnpickler(io.BytesIO(data[start:end]), storages).load()
    except WeightsError:
        raise
    except Exception as exc:  # any failure of a hostile or damaged pickle is a bad file
        raise WeightsError(f"malformed pickle at byte {start}: {type(exc).__name__}: {exc}") from None
    return value, end


def _read_header(data: bytes) -> int:
    """Check pickles 1-3 (magic, protocol version, sys info); return where pickle 4 starts."""
    magic, pos = _load_pickle(data, 0, {})
    if magic != MAGIC_NUMBER:
        raise WeightsError("not a legacy torch.save file (wrong magic number)")
    version, pos = _load_pickle(data, pos, {})
    if version != PROTOCOL_VERSION:
        raise WeightsError(f"unsupported torch.save protocol version {version!r:.40}, "
                           f"expected {PROTOCOL_VERSION}")
    sys_info, pos = _load_pickle(data, pos, {})
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise WeightsError("only little-endian legacy torch files are supported")
    return pos


def _read_storages(data: bytes, pos: int, keys, storages: dict) -> dict:
    """Read each storage record (8-byte count, raw bytes) in ``keys`` order -> {key: 1-D array}."""
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise WeightsError("the storage key list is not a list of strings")
    if len(set(keys)) != len(keys) or set(keys) != set(storages):
        raise WeightsError(f"the storage key list ({len(keys)} keys) does not match the "
                           f"{len(storages)} storages the tensors use")
    arrays = {}
    for key in keys:
        ref = storages[key]
        if pos + 8 > len(data):
            raise WeightsError(f"file ends before the size of storage {key!r}")
        (count,) = struct.unpack_from("<q", data, pos)
        pos += 8
        nbytes = ref.numel * ref.dtype.itemsize
        if count != ref.numel or pos + nbytes > len(data):
            raise WeightsError(f"storage {key!r}: {ref.numel} elements declared, record says {count} "
                               f"and {len(data) - pos} bytes remain (needs {nbytes})")
        arrays[key] = np.frombuffer(data, dtype=ref.dtype, count=ref.numel, offset=pos)
        pos += nbytes
    if pos != len(data):
        raise WeightsError(f"{len(data) - pos} unexpected bytes after the last storage")
    return arrays


def _check_geometry(name: str, ref: TensorRef) -> None:
    """Refuse a tensor that would read outside its storage or have more elements than it."""
    numel = ref.storage.numel
    if len(ref.size) != len(ref.stride) or len(ref.size) > _MAX_DIMS:
        raise WeightsError(f"tensor {name!r}: size {ref.size} and stride {ref.stride} do not match")
    if min(ref.size + ref.stride + (ref.offset,), default=0) < 0 or ref.offset > numel:
        raise WeightsError(f"tensor {name!r}: negative size/stride or offset {ref.offset} beyond "
                           f"its storage of {numel}")
    elements = 1
    for n in ref.size:
        elements *= n
    if elements > numel:
        raise WeightsError(f"tensor {name!r} of size {ref.size} has more elements than its storage "
                           f"({numel}); broadcast views are not supported")
    if elements and ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) >= numel:
        raise WeightsError(f"tensor {name!r} (offset {ref.offset}, size {ref.size}, stride "
                           f"{ref.stride}) reads past the end of its storage of {numel}")


def _build_array(ref: TensorRef, storage: np.ndarray) -> np.ndarray:
    """Copy the validated view ``storage[offset + sum i_k * stride_k]`` out as a native array."""
    native = ref.storage.dtype.newbyteorder("=")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=native)
    itemsize = storage.itemsize
    strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(ref.size, ref.stride))
    view = as_strided(storage[ref.offset:], shape=ref.size, strides=strides, writeable=False)
    return np.array(view, dtype=native, order="C")


def read_legacy_torch(source) -> dict:
    """Read a legacy ``torch.save`` file of a flat dict of tensors -> {name: np.ndarray}.

    source: a path or the file's bytes. Raises ``WeightsError`` for anything
    malformed, truncated, hostile or unsupported; nothing in the file is executed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise WeightsError(f"cannot read {source}: {exc}") from None
    storages = {}
    pos = _read_header(data)
    obj, pos = _load_pickle(data, pos, storages)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, TensorRef)
                                            for k, v in obj.items()):
        raise WeightsError("expected a dict of named tensors in the legacy torch file")
    keys, pos = _load_pickle(data, pos, storages)
    for name, ref in obj.items():
        _check_geometry(name, ref)
    arrays = _read_storages(data, pos, keys, storages)
    return {name: _build_array(ref, arrays[ref.storage.key]) for name, ref in obj.items()}
