"""Executing and cleaning the course notebooks, for instructors and for the tests.

The committed notebooks are clean (see the course's STYLE): no widget state, and only the outputs
(and execution counts) of the cells a test compares, those marked ``# NBVAL_CHECK_OUTPUT``.
``refresh`` re-executes a notebook and keeps exactly those outputs, so that
``pytest --nbval-lax`` has something true to compare against::

    python -m course_lib.nbtools refresh notebooks/01_patches.ipynb   # after editing a lesson
    python -m course_lib.nbtools check notebooks/*.ipynb              # exit 1 if one is not clean

Only outputs and metadata are rewritten: the cells' sources are never touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
KERNEL_NAME = "python3"
_VOLATILE_NOTEBOOK_METADATA = ("widgets",)
_VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def execute(notebook: nbformat.NotebookNode, workdir: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell of ``notebook`` in a fresh kernel started in ``workdir``; raises on error."""
    client = NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return notebook


def clean(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip what must not be committed: execution counts, widget state, unchecked outputs."""
    for key in _VOLATILE_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if CHECK_MARKER not in cell.source:
            cell.execution_count = None
            cell.outputs = []
        # A checked cell keeps its outputs and its execution count: nbval treats a cell with
        # outputs but no count as never run ("Unrun reference cell has outputs").
    return notebook


def problems(notebook: nbformat.NotebookNode) -> list[str]:
    """Why ``notebook`` is not clean (an empty list when it is)."""
    found = []
    if "widgets" in notebook.metadata:
        found.append("notebook metadata holds widget state")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        checked = CHECK_MARKER in cell.source
        if cell.execution_count is not None and not checked:
            found.append(f"cell {index} has an execution count")
        if cell.outputs and not checked:
            found.append(f"cell {index} keeps outputs that no test checks")
        if checked and (not cell.outputs or cell.execution_count is None):
            found.append(f"cell {index} is marked {CHECK_MARKER} but has no stored run; refresh the notebook")
    return found


def refresh(path: Path, timeout: int = 600) -> None:
    """Execute the notebook at ``path`` and save it back, cleaned, with its checked outputs."""
    notebook = nbformat.read(path, as_version=4)
    execute(notebook, path.parent, timeout)
    nbformat.write(clean(notebook), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.nbtools", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["refresh", "clean", "check"])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            status = 1
            continue
        if args.command == "refresh":
            refresh(path)
            print(f"{path}: executed and cleaned")
        elif args.command == "clean":
            nbformat.write(clean(nbformat.read(path, as_version=4)), path)
            print(f"{path}: cleaned")
        else:
            found = problems(nbformat.read(path, as_version=4))
            for problem in found:
                print(f"{path}: {problem}")
            status = status or int(bool(found))
    return status


if __name__ == "__main__":
    sys.exit(main())
