"""The backend rule: maths code reaches NumPy or CuPy only through ``get_array_module``."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from minivgg.backend import (ArrayPool, channels_last, dense, empty, flat_memory, flat_spatial, get_array_module,
                             to_device, to_numpy, work)

ROOT = Path(__file__).resolve().parents[1]
# The maths: layers, network, losses, objective. I/O boundaries (images, weights
# files, the scipy boundary in optim/, the CLI, benchmarks) may use NumPy by name.
MATHS = ["minivgg/conv.py", "minivgg/conv_naive.py", "minivgg/relu.py", "minivgg/pool.py",
         "minivgg/vgg.py", "minivgg/transfer/objective.py", *sorted(
             str(p.relative_to(ROOT)) for p in (ROOT / "losses").glob("*.py"))]


def numpy_uses(path: Path) -> list[str]:
    """Lines of ``path`` that import numpy/cupy or call ``np.``/``numpy.``/``cupy.`` directly."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in ("numpy", "cupy")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("numpy", "cupy"):
            found.append(f"{path}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("np", "numpy", "cupy", "cp"):
            found.append(f"{path}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_maths_code_never_calls_numpy_directly():
    assert len(MATHS) >= 9
    offenders = [hit for rel in MATHS for hit in numpy_uses(ROOT / rel)]
    assert offenders == []


def test_the_checker_catches_a_direct_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\n\ndef f(x):\n    return np.maximum(x, 0)\n")
    assert len(numpy_uses(bad)) == 2


def test_numpy_is_the_default_backend():
    x = np.zeros(3)
    assert get_array_module(x) is np
    assert to_numpy(to_device(x, "cpu")) is x


def test_array_pool_reuses_only_what_nobody_holds():
    pool = ArrayPool()
    with pool:
        a = empty(np, (4, 5), np.float32)
        address = a.ctypes.data
        view = a[1:].T                                   # a view keeps the memory in use
        del a
        b = empty(np, (20,), np.int32)                   # same byte size, but still referenced
        assert b.ctypes.data != address
        del view
        c = empty(np, (2, 10), np.float32)               # now free: handed out again
        assert c.ctypes.data == address and c.shape == (2, 10) and c.dtype == np.float32
        assert empty(np, (3,), np.float64).ctypes.data not in (address, b.ctypes.data)
    assert empty(np, (4, 5), np.float32).ctypes.data != address   # no pool active: plain memory
    held = pool.nbytes
    del b
    pool.trim()                                          # all were handed out since the last trim
    assert pool.nbytes == held
    pool.trim()                                          # none since: forgotten (c lives on)
    assert pool.nbytes == 0 and c.shape == (2, 10)


def test_array_pool_work_buffers():
    pool = ArrayPool()
    assert [w.shape for w in work(np, (3, 0, 7), np.float32)] == [(3,), (0,), (7,)]   # no pool
    with pool:
        first = work(np, (10, 100, 5), np.float32)
        assert [w.shape for w in first] == [(10,), (100,), (5,)]
        assert all(w.ctypes.data % 64 == 0 for w in first)            # each on a cache line
        first[0][:] = 1
        first[1][:] = 2                                               # no overlap
        assert float(first[0].sum()) == 10.0
        alive = work(np, (10,), np.float32)                           # first still held: fresh memory
        assert alive[0].ctypes.data != first[0].ctypes.data
        address = alive[0].ctypes.data
        del first, alive
        again = work(np, (6,), np.float32)                             # fits the buffer alive had
        assert again[0].ctypes.data == address                        # reused once nothing holds it


def test_memory_orders():
    """Channels-last arrays: made by ``empty``, recognised, and flattened without copies."""
    c_order = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    last = empty(np, (2, 3, 4, 5), np.float32, channels_last=True)
    last[...] = c_order
    assert last.shape == (2, 3, 4, 5) and last.base.shape == (2, 4, 5, 3) and last.base.flags.c_contiguous
    assert channels_last(last) and not channels_last(c_order) and not last.flags.c_contiguous
    for a in (c_order, last):
        spatial = flat_spatial(a)
        assert spatial.shape == (2, 3, 20) and np.shares_memory(spatial, a)
        assert np.array_equal(spatial, c_order.reshape(2, 3, 20))
        flat = flat_memory(a)
        assert flat.shape == (120,) and np.shares_memory(flat, a) and float(flat @ flat) == float((a * a).sum())
        assert dense(a) is a
    scrambled = c_order[:, :, ::-1]
    assert not channels_last(scrambled) and dense(scrambled).flags.c_contiguous
    assert np.array_equal(dense(scrambled), scrambled) and np.array_equal(flat_spatial(scrambled),
                                                                          scrambled.reshape(2, 3, 20))
    pool = ArrayPool()
    with pool:
        pooled = empty(np, (1, 2, 3, 4), np.float32, channels_last=True)
        plain = empty(np, (1, 2, 3, 4), np.float32, channels_last=True, pooled=False)
        assert pool.nbytes == pooled.nbytes and channels_last(plain) and plain.base is not pooled.base
