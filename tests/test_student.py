"""Student copies: regions become stubs, outputs are cleared, edited copies are never overwritten."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.student import (CODE_STUB, MANIFEST, SolutionRegionError, make_student_notebook, stub_source,
                                write_student_copies)

SOLUTION_CELL = """def square(x):
    \"\"\"Return x squared.\"\"\"
    ### BEGIN SOLUTION
    result = x * x
    return result
    ### END SOLUTION"""


def test_region_becomes_indented_stub():
    student = stub_source(SOLUTION_CELL)
    assert "result = x * x" not in student and "### BEGIN SOLUTION" not in student
    assert f"    {CODE_STUB[0]}" in student and f"    {CODE_STUB[1]}" in student
    assert student.startswith('def square(x):\n    """Return x squared."""')
    namespace = {}
    exec(student, namespace)  # the stub is valid Python...
    with pytest.raises(NotImplementedError):  # ...that raises when called
        namespace["square"](3)


def test_two_regions_and_markdown():
    source = SOLUTION_CELL + "\n\n" + SOLUTION_CELL.replace("square", "cube")
    assert stub_source(source).count(CODE_STUB[0]) == 2
    assert stub_source("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "markdown") == "Why?\nYOUR ANSWER HERE"


@pytest.mark.parametrize("source, words", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", ["top level", "function body"]),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", ["never closed"]),
    ("def f():\n    return 1\n    ### END SOLUTION", ["without"]),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION", ["inside another"]),
])
def test_malformed_regions_are_named(source, words):
    with pytest.raises(SolutionRegionError) as raised:
        stub_source(source, where="demo.ipynb cell 3")
    assert "demo.ipynb cell 3" in str(raised.value)
    for word in words:
        assert word in str(raised.value)


def _instructor_notebook():
    cell = new_code_cell(SOLUTION_CELL, execution_count=4, outputs=[new_output("stream", name="stdout", text="hi")])
    return new_notebook(cells=[new_markdown_cell("# Demo"), cell], metadata={"widgets": {"state": {}}})


def test_student_notebook_is_cleared():
    student = make_student_notebook(_instructor_notebook())
    code = student.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert "widgets" not in student.metadata
    assert "x * x" not in code.source


def test_write_copies_never_overwrites_edited_work(tmp_path):
    source, target = tmp_path / "notebooks", tmp_path / "student"
    source.mkdir()
    nbformat.write(_instructor_notebook(), source / "01_demo.ipynb")
    first = write_student_copies(source, target)
    assert first.written == ["01_demo.ipynb"] and first.kept == []
    assert json.loads((target / MANIFEST).read_text())["01_demo.ipynb"]

    # Unchanged copy: regenerated freely.
    assert write_student_copies(source, target).written == ["01_demo.ipynb"]

    # The student edits their copy: it is kept, even when the instructor's notebook changes.
    copy = target / "01_demo.ipynb"
    edited = copy.read_text().replace("YOUR CODE HERE", "my attempt")
    copy.write_text(edited)
    second = write_student_copies(source, target)
    assert second.kept == ["01_demo.ipynb"] and second.written == []
    assert copy.read_text() == edited

    # --force overwrites on purpose.
    assert write_student_copies(source, target, force=True).written == ["01_demo.ipynb"]
    assert "my attempt" not in copy.read_text()


def test_copy_without_manifest_entry_is_kept(tmp_path):
    source, target = tmp_path / "notebooks", tmp_path / "student"
    source.mkdir(); target.mkdir()
    nbformat.write(_instructor_notebook(), source / "01_demo.ipynb")
    (target / "01_demo.ipynb").write_text("a student's own file")
    assert write_student_copies(source, target).kept == ["01_demo.ipynb"]
    assert (target / "01_demo.ipynb").read_text() == "a student's own file"


def test_no_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no notebooks found"):
        write_student_copies(tmp_path, tmp_path / "student")
