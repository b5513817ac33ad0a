"""The backend rule: maths code reaches NumPy or CuPy only through ``get_array_module``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import numpy as np

from minivgg.backend import get_array_module, to_device, to_numpy

ROOT = Path(__file__).resolve().parents[1]
# The maths: layers, network, losses, objective, both engines. I/O boundaries (images, weights
# files, the scipy boundary in optim/, the CLI, benchmarks) may use NumPy by name, and so does
# the fast engine's ArrayPool (minivgg/fast/arrays.py), an allocator of NumPy buffers by design.
MATHS = ["minivgg/conv.py", "minivgg/conv_naive.py", "minivgg/relu.py", "minivgg/pool.py",
         "minivgg/vgg.py", "minivgg/architecture.py", "minivgg/transfer/objective.py", *sorted(
             str(p.relative_to(ROOT)) for p in [*(ROOT / "losses").glob("*.py"), *(ROOT / "minivgg" / "fast").glob("*.py")]
             if p.name != "arrays.py")]


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
    assert len(MATHS) >= 17
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


@pytest.mark.parametrize("package", ["minivgg", "losses", "optim", "weights", "minivgg.transfer"])
def test_each_package_imports_on_its_own(package):
    """A fresh interpreter imports each package first (no import loop through another one's __init__)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", f"import {package}; import minivgg; minivgg.VGG19"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
