"""Every notebook: committed clean, its checks recorded as passing, and its student copy runs.

The solution notebooks themselves are executed by nbval (``pytest notebooks --nbval-lax``), which
compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``.
"""

from pathlib import Path

import nbformat
import pytest

from course_lib import nbtools
from course_lib.student import BEGIN, END, make_student_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]


def _solution_lines(source: str) -> set[str]:
    lines, inside = set(), False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            lines.add(line.strip())
    return lines


def _outside_lines(source: str) -> set[str]:
    return {line.strip() for line in source.splitlines()} - _solution_lines(source)


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS][:2] == ["00_welcome.ipynb", "01_patches.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_clean(path):
    assert nbtools.problems(nbformat.read(path, as_version=4)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_recorded_checks_pass(path):
    notebook = nbformat.read(path, as_version=4)
    check_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and "check_" in cell.source
                   and nbtools.CHECK_MARKER in cell.source]
    regions = sum(cell.source.count(BEGIN) for cell in notebook.cells if cell.cell_type == "code")
    assert len(check_cells) >= min(regions, 1), "every notebook with exercises records its checks"
    text = "".join(str(output) for cell in check_cells for output in cell.outputs)
    assert "⏳" not in text and "Traceback" not in text
    assert text.count("✅") >= regions // 2, "the solution's checks are recorded as passing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_copy_contains_no_solution_line(path):
    notebook = nbformat.read(path, as_version=4)
    student = make_student_notebook(notebook, path.name)
    for original, copy in zip(notebook.cells, student.cells):
        leaked = (_solution_lines(original.source) - _outside_lines(original.source)) & _outside_lines(copy.source)
        assert not leaked, f"solution lines left in the student copy of {path.name}: {leaked}"
        markers = [line for line in copy.source.splitlines() if line.strip() in (BEGIN, END)]
        assert not markers, f"solution markers left in the student copy of {path.name}"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_copy_runs_top_to_bottom(path, tmp_path):
    student = make_student_notebook(nbformat.read(path, as_version=4), path.name)
    nbtools.execute(student, tmp_path, timeout=600)  # raises CellExecutionError on any error
    outputs = "".join(str(output) for cell in student.cells if cell.cell_type == "code" for output in cell.outputs)
    exercises = sum(cell.source.count("YOUR CODE HERE") for cell in student.cells if cell.cell_type == "code")
    if exercises:
        assert "not implemented yet" in outputs, "stubbed exercises are reported as not implemented"
