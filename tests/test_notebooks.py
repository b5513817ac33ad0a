"""Every notebook, executed top to bottom with small parameters, so that none can rot.

Each notebook has exactly one cell tagged ``parameters`` holding its sizes and
iteration counts. Here that cell's source is replaced by the small values of
``SMALL_PARAMETERS`` (same names, tiny images, a few iterations), and the
notebook runs in a temporary copy (the committed file is never written) with a
kernel started from the interpreter running the tests. Any error or failed
assertion in any cell fails the test. Figures go to a temporary folder.

The real network's weights and the sample photos are fetched and cached on
first use, like everywhere else in the test suite.
"""
from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# Python source of each notebook's parameters cell in CI. "{figures}" becomes a temporary folder.
SMALL_PARAMETERS = {
    "01_layers.ipynb": """
SIZE = 64
SMALL = (2, 3, 5, 7)
O = 3
ADJOINT_SIZE = (1, 64, 24, 32)
""",
    "02_losses.ipynb": """
SIZE = 64
SMALL = (1, 4, 5, 6)
CHECK_SIZE = 48
""",
    "03_content_reconstruction.ipynb": """
SIZE = 64
ITERATIONS = 3
FIGURE_DIR = {figures!r}
""",
    "04_style_reconstruction.ipynb": """
SIZE = 64
ITERATIONS = 3
FIGURE_DIR = {figures!r}
""",
    "05_style_transfer.ipynb": """
SIZE = 64
ALPHA_BETA = 1e-3
ITERATIONS = 8
COMPARE_EVALUATIONS = 6
VARIANT_ITERATIONS = 3
FIG2_ITERATIONS = 3
FIGURE_DIR = {figures!r}
""",
    "06_tradeoffs.ipynb": """
SIZE = 64
ITERATIONS = 2
RATIOS = (1e-5, 1e-4, 1e-3, 1e-2)
FIGURE_DIR = {figures!r}
""",
    "07_optimizer.ipynb": """
SIZE = 64
ITERATIONS = 4
MAXCOR = 5
""",
    "08_control.ipynb": """
SIZE = 64
ITERATIONS = 20
SMALL = (1, 4, 5, 6)
FIGURE_DIR = {figures!r}
""",
}

CELL_TIMEOUT_S = 600
SOLUTIONS = NOTEBOOKS / "solutions"
SOLUTION_PARAMETERS = {f"{stem}_solutions.ipynb": f'NOTEBOOK = "{stem}.ipynb"' for stem in (
    "01_layers", "02_losses", "03_content_reconstruction", "04_style_reconstruction",
    "05_style_transfer", "06_tradeoffs")}
# Run first in every kernel: a notebook whose asserts are stripped (PYTHONOPTIMIZE) must fail, not pass.
ASSERTS_LIVE = """
try:
    assert False
except AssertionError:
    pass
else:
    raise RuntimeError("assert statements are stripped in this kernel (PYTHONOPTIMIZE?)")
"""


def notebook_paths():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def parameter_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]


def assigned_names(source: str) -> set:
    """Names assigned at the top level of a cell's source."""
    names = set()
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            raise AssertionError(f"a parameters cell holds only assignments, found: {ast.dump(node)[:80]}")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A JUPYTER_PATH whose ``python3`` kernel is this very interpreter (no kernelspec install needed)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


def test_every_notebook_has_small_parameters():
    found = {p.name for p in notebook_paths()}
    assert found, f"no notebooks in {NOTEBOOKS}"
    assert found == set(SMALL_PARAMETERS), (
        f"notebooks without CI parameters: {sorted(found - set(SMALL_PARAMETERS))}; "
        f"parameters for missing notebooks: {sorted(set(SMALL_PARAMETERS) - found)}")


@pytest.mark.parametrize("name", sorted(SMALL_PARAMETERS))
def test_one_parameters_cell_with_the_same_names(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{name} has {len(cells)} cells tagged 'parameters', expected exactly 1"
    small = SMALL_PARAMETERS[name].format(figures="/tmp")
    assert assigned_names(cells[0].source) == assigned_names(small), (
        f"{name}: the parameters cell and the CI values name different variables")


@pytest.mark.parametrize("name", sorted(SMALL_PARAMETERS))
def test_notebook_runs_with_small_parameters(name, tmp_path, kernel_env, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    (cell,) = parameter_cells(nb)
    figures = tmp_path / "figures"
    cell.source = SMALL_PARAMETERS[name].format(figures=str(figures)).strip()
    # First, prove the kernel is this interpreter (same prefix: same virtual environment).
    probe = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.prefix, sys.executable)\n" + ASSERTS_LIVE)
    nb.cells.insert(0, probe)

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.monotonic()
    client.execute()                                 # raises CellExecutionError on any error
    print(f"{name}: {time.monotonic() - start:.1f} s")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    if "FIGURE_DIR" in SMALL_PARAMETERS[name]:
        assert any(figures.glob("*.png")) or any(figures.glob("*.jpg")), \
            f"{name} wrote no figure into FIGURE_DIR"


def test_every_solutions_notebook_is_listed_and_reads_its_notebooks_checks():
    found = {p.name for p in SOLUTIONS.glob("*.ipynb")}
    assert found == set(SOLUTION_PARAMETERS), (
        f"unlisted: {sorted(found - set(SOLUTION_PARAMETERS))}; missing: {sorted(set(SOLUTION_PARAMETERS) - found)}")
    for name in SOLUTION_PARAMETERS:
        learner = nbformat.read(NOTEBOOKS / name.replace("_solutions", ""), as_version=4)
        checks = [c for c in learner.cells if c.cell_type == "code" and "check" in c.metadata.get("tags", [])]
        assert len(checks) == 1, f"{name}: its notebook has {len(checks)} cells tagged 'check'"


@pytest.mark.parametrize("name", sorted(SOLUTION_PARAMETERS))
def test_solutions_notebook_runs(name, tmp_path, kernel_env, monkeypatch):
    """The worked solutions of each notebook's exercises pass that notebook's own checks."""
    nb = nbformat.read(SOLUTIONS / name, as_version=4)
    (cell,) = parameter_cells(nb)
    assert assigned_names(cell.source) == assigned_names(SOLUTION_PARAMETERS[name])
    cell.source = SOLUTION_PARAMETERS[name]
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.prefix, sys.executable)\n" + ASSERTS_LIVE))
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
