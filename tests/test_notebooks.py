"""Every notebook, executed top to bottom with small parameters, so that none can rot.

Each notebook has exactly one cell tagged ``parameters`` holding its sizes and
iteration counts. Here that cell's source is replaced by the small values in
``tests/notebook_ci/<notebook>.txt`` (same names, tiny images, a few iterations), and the
notebook runs in a temporary copy (the committed file is never written) with a
kernel started from the interpreter running the tests. Any error or failed
assertion in any cell fails the test. Figures go to a temporary folder.

The real network's weights and the sample photos are fetched and cached on
first use, like everywhere else in the test suite.

Every notebook ends with at least two exercises, each with a ``check_...`` function in the
notebook's one cell tagged ``check``. ``solutions/<notebook>_solutions.ipynb`` runs that cell on
worked solutions, and defines ``MISTAKES``: for each check, at least two plausible wrong answers
by name (a missing kernel flip, a dropped 1/2, ...). The test runs every check on every one of
them in the solutions notebook's kernel and requires a failed check (an ``AssertionError``), not
a crash.
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
SOLUTIONS = NOTEBOOKS / "solutions"
# tests/notebook_ci/<notebook stem>.txt: the Python source of each notebook's parameters cell in CI
# (same names, tiny images, a few iterations); "{figures}" becomes a temporary folder.
CI_PARAMETERS = Path(__file__).resolve().parent / "notebook_ci"


def small_parameters(name: str) -> str:
    return (CI_PARAMETERS / (Path(name).stem + ".txt")).read_text(encoding="utf-8")


CELL_TIMEOUT_S = 600
SOLUTIONS = NOTEBOOKS / "solutions"


def solutions_name(name: str) -> str:
    return f"{Path(name).stem}_solutions.ipynb"


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


NOTEBOOK_NAMES = [p.name for p in notebook_paths()]


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
    found = {p.stem for p in notebook_paths()}
    assert found, f"no notebooks in {NOTEBOOKS}"
    listed = {p.stem for p in CI_PARAMETERS.glob("*.txt")}
    assert found == listed, (
        f"notebooks without CI parameters: {sorted(found - listed)}; "
        f"parameters for missing notebooks: {sorted(listed - found)}")


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_one_parameters_cell_with_the_same_names(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{name} has {len(cells)} cells tagged 'parameters', expected exactly 1"
    small = small_parameters(name).format(figures="/tmp")
    assert assigned_names(cells[0].source) == assigned_names(small), (
        f"{name}: the parameters cell and the CI values name different variables")


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_runs_with_small_parameters(name, tmp_path, kernel_env, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    (cell,) = parameter_cells(nb)
    figures = tmp_path / "figures"
    cell.source = small_parameters(name).format(figures=str(figures)).strip()
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
    if "FIGURE_DIR" in small_parameters(name):
        assert any(figures.glob("*.png")) or any(figures.glob("*.jpg")), \
            f"{name} wrote no figure into FIGURE_DIR"


def check_cell(name: str) -> str:
    """The source of the one code cell tagged ``check`` in notebook ``name``."""
    learner = nbformat.read(NOTEBOOKS / name, as_version=4)
    checks = [c for c in learner.cells if c.cell_type == "code" and "check" in c.metadata.get("tags", [])]
    assert len(checks) == 1, f"{name} has {len(checks)} cells tagged 'check', expected 1"
    return checks[0].source


def check_names(name: str) -> list:
    """The check functions (top-level ``def check_...``) of a notebook's check cell: one per exercise."""
    return [node.name for node in ast.parse(check_cell(name)).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_")]


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_every_notebook_ends_with_two_checked_exercises_and_their_solutions(name):
    checks = check_names(name)
    assert len(checks) >= 2, f"{name}: {len(checks)} check functions ({checks}), every notebook has at least 2 exercises"
    assert (SOLUTIONS / solutions_name(name)).exists(), f"{name}: no solutions/{solutions_name(name)}"
    found = {p.name for p in SOLUTIONS.glob("*.ipynb")}
    assert found <= {solutions_name(n) for n in NOTEBOOK_NAMES}, f"solutions without a notebook: {sorted(found)}"


# Appended to every solutions notebook: each check is run on each plausible mistake that
# MISTAKES (a dict the solutions notebook defines: check name -> {mistake's name: function})
# names for it; the report says which were rejected by a failed check (AssertionError), which
# raised something else and which were accepted.
MISTAKES_PROBE = """
import json as _json
_report = {}
for _check, _mistakes in MISTAKES.items():
    _report[_check] = {}
    for _label, _wrong in _mistakes.items():
        try:
            globals()[_check](_wrong)
        except AssertionError as _error:
            _report[_check][_label] = "rejected: " + str(_error)[:300]
        except Exception as _error:
            _report[_check][_label] = f"raised {type(_error).__name__}: {_error}"[:300]
        else:
            _report[_check][_label] = "accepted"
print("MISTAKES-REPORT " + _json.dumps(_report))
"""


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_solutions_notebook_runs_and_every_check_rejects_two_named_mistakes(name, tmp_path, kernel_env, monkeypatch):
    """The worked solutions pass the notebook's own checks, and each check fails on >= 2 plausible mistakes."""
    nb = nbformat.read(SOLUTIONS / solutions_name(name), as_version=4)
    (cell,) = parameter_cells(nb)
    expected = f'NOTEBOOK = "{name}"'
    assert assigned_names(cell.source) == assigned_names(expected)
    cell.source = expected
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.prefix, sys.executable)\n" + ASSERTS_LIVE))
    nb.cells.append(nbformat.v4.new_code_cell(MISTAKES_PROBE))
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"

    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.output_type == "stream")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("MISTAKES-REPORT ")]
    report = json.loads(line[len("MISTAKES-REPORT "):])
    for check in check_names(name):
        mistakes = report.get(check, {})
        assert len(mistakes) >= 2, f"{name}: {check} is shown {len(mistakes)} named mistakes, needs at least 2"
        for label, verdict in mistakes.items():
            assert verdict.startswith("rejected: "), f"{name}: {check} on the mistake {label!r}: {verdict}"
    assert set(report) <= set(check_names(name)), f"{name}: MISTAKES names unknown checks {sorted(set(report) - set(check_names(name)))}"
