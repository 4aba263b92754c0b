"""Student copies of the notebooks: every solution region becomes a stub.

Instructor notebooks hold their solutions between nbgrader's markers::

    def patchify(images, patch_size):
        ### BEGIN SOLUTION
        ...the solution...
        ### END SOLUTION

``python -m course_lib.student`` (``make student``) writes ``student/<name>.ipynb`` for every
``notebooks/<name>.ipynb``, with each code region replaced by ``# YOUR CODE HERE`` and
``raise NotImplementedError``, each markdown region by ``YOUR ANSWER HERE``, and all outputs cleared.
The exercises' check cells then report "not implemented yet", so Run All still completes.

Solution regions sit inside function bodies: a stub at the top level of a cell would stop Run All,
so the tool refuses such a notebook and names the cell.

A student copy that was edited since it was generated (by a student, or by saving after running
it) is never overwritten: the tool says so and leaves it, unless ``--force``. It remembers what it
wrote in ``student/.generated.json`` (a SHA-256 of each file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", 'raise NotImplementedError("exercise: replace this line with your code")')
MARKDOWN_STUB = "YOUR ANSWER HERE"
MANIFEST = ".generated.json"


class SolutionRegionError(ValueError):
    """A solution region is malformed: unbalanced markers, or code at a cell's top level."""


def stub_source(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """Replace each solution region of one cell's source by its stub.

    Args:
        source: the cell's text.
        cell_type: ``"code"`` or ``"markdown"``.
        where: names the cell in error messages, e.g. ``"01_patches.ipynb cell 7"``.

    Returns:
        The text with every region from a ``### BEGIN SOLUTION`` line to the next
        ``### END SOLUTION`` line (both included) replaced by the stub, indented like the marker.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise SolutionRegionError(f"{where}, line {number}: {BEGIN} inside another region; close it with {END}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if cell_type == "code":
                if not indent:
                    raise SolutionRegionError(
                        f"{where}, line {number}: solution region at the top level of a cell; a stub there "
                        "would stop Run All. Put the exercise inside a function body.")
                out.extend(indent + stub for stub in CODE_STUB)
            else:
                out.append(MARKDOWN_STUB)
        elif stripped == END:
            if not inside:
                raise SolutionRegionError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SolutionRegionError(f"{where}: {BEGIN} is never closed with {END}")
    return "\n".join(out)


def make_student_notebook(notebook: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A student copy of ``notebook``: regions stubbed, outputs and execution counts cleared."""
    copy = nbformat.from_dict(json.loads(json.dumps(notebook)))  # deep copy
    copy.metadata.pop("widgets", None)
    for index, cell in enumerate(copy.cells):
        cell.source = stub_source(cell.source, cell.cell_type, f"{name} cell {index}")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return copy


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StudentCopyReport:
    written: list[str]  # file names written (new or unchanged since generated)
    kept: list[str]  # file names left alone because they were edited


def write_student_copies(source_dir: Path, target_dir: Path, force: bool = False) -> StudentCopyReport:
    """Write a student copy of every notebook in ``source_dir`` into ``target_dir``.

    A copy whose content differs from what this tool last wrote is kept, unless ``force``.
    """
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no notebooks found in {source_dir}; run this from the course's root folder")
    target_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = target_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    report = StudentCopyReport(written=[], kept=[])
    for source in notebooks:
        target = target_dir / source.name
        if target.exists() and not force and manifest.get(source.name) != _sha256(target):
            report.kept.append(source.name)
            continue
        student = make_student_notebook(nbformat.read(source, as_version=4), source.name)
        nbformat.write(student, target)
        manifest[source.name] = _sha256(target)
        report.written.append(source.name)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.student",
                                     description="Write student copies of the course notebooks.")
    parser.add_argument("--source", type=Path, default=Path("notebooks"), help="instructor notebooks (default: notebooks)")
    parser.add_argument("--target", type=Path, default=Path("student"), help="where the copies go (default: student)")
    parser.add_argument("--force", action="store_true", help="overwrite copies even if they were edited")
    args = parser.parse_args(argv)
    try:
        report = write_student_copies(args.source, args.target, force=args.force)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name in report.written:
        print(f"wrote  {args.target / name}")
    for name in report.kept:
        print(f"kept   {args.target / name}: edited since it was generated; "
              "rerun with --force to overwrite it (your changes would be lost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
