"""Is this environment ready for the course? ``python -m course_lib.doctor`` answers.

It reports the versions of the main packages, whether the JupyterLab widget front end is
installed and matches ``ipywidgets`` (the usual reason a slider shows as text instead of a
slider), how many threads torch uses, and whether the cache directory is writable, then gives
a one-line verdict.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REQUIRED_PYTHON = (3, 11)
PACKAGES = ("torch", "torchaudio", "open_clip_torch", "jupyterlab", "ipywidgets", "jupyterlab_widgets")
WIDGET_EXTENSION = Path("share/jupyter/labextensions/@jupyter-widgets/jupyterlab-manager/package.json")
# The JupyterLab widget manager (a JavaScript package shipped inside jupyterlab_widgets) has its own
# version line: ipywidgets 8.x needs manager 5.x (ipywidgets 7.x went with manager 3.x).
FRONTEND_MAJOR_FOR_IPYWIDGETS = {"8": "5", "7": "3"}


@dataclass
class Report:
    """What the doctor found; ``repr`` is the printable report, ``ok`` the verdict."""

    lines: list[tuple[str, str]] = field(default_factory=list)  # (what, finding)
    problems: list[str] = field(default_factory=list)  # each with its fix

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        if self.ok:
            return "VERDICT: ready. Everything the course needs is installed and working."
        return f"VERDICT: not ready, {len(self.problems)} problem(s): " + " | ".join(self.problems)

    def __repr__(self) -> str:
        width = max(len(what) for what, _ in self.lines)
        body = "\n".join(f"{what:<{width}}  {finding}" for what, finding in self.lines)
        return f"{body}\n{self.verdict}"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _widget_frontend(prefix: Path) -> str | None:
    """Version of the JupyterLab widget manager extension installed in ``prefix``, if any."""
    package_json = prefix / WIDGET_EXTENSION
    if not package_json.is_file():
        return None
    return json.loads(package_json.read_text()).get("version")


def check_environment(cache: Path | None = None) -> Report:
    """Inspect this Python environment and return a :class:`Report`."""
    report = Report()
    python = platform.python_version()
    report.lines.append(("python", f"{python} ({sys.executable})"))
    if sys.version_info[:2] != REQUIRED_PYTHON:
        report.problems.append(f"Python {python} is not 3.11; run `make lab` to create .venv with Python 3.11")

    for package in PACKAGES:
        version = _version(package)
        report.lines.append((package, version or "MISSING"))
        if version is None:
            report.problems.append(f"{package} is missing; run `make lab` (it installs requirements.txt)")

    frontend = _widget_frontend(Path(sys.prefix))
    ipywidgets_version = _version("ipywidgets") or "?"
    wanted_major = FRONTEND_MAJOR_FOR_IPYWIDGETS.get(ipywidgets_version.split(".")[0])
    if frontend is None:
        report.lines.append(("widget front end", "NOT installed in this environment"))
        report.problems.append("the JupyterLab widget manager is missing, so sliders show as plain text; "
                               "reinstall jupyterlab_widgets in this environment (make lab does)")
    elif wanted_major is None or frontend.split(".")[0] != wanted_major:
        report.lines.append(("widget front end", f"manager {frontend} (MISMATCH)"))
        report.problems.append(f"widget manager {frontend} does not go with ipywidgets {ipywidgets_version}; "
                               "install the jupyterlab_widgets version pinned in requirements.txt")
    else:
        report.lines.append(("widget front end", f"manager {frontend}, matches ipywidgets {ipywidgets_version}"))

    import torch

    report.lines.append(("torch threads", f"{torch.get_num_threads()} (CPU only is fine)"))

    if cache is None:
        from course_lib.runtime import cache_dir

        try:
            cache = cache_dir()
        except OSError as error:
            report.problems.append(f"cannot create the cache directory: {error}; set COURSE_LIB_CACHE to a writable folder")
            return report
    try:
        with tempfile.NamedTemporaryFile(dir=cache):
            pass
        report.lines.append(("cache directory", f"{cache} (writable)"))
    except OSError as error:
        report.lines.append(("cache directory", f"{cache} (NOT writable)"))
        report.problems.append(f"cache directory {cache} is not writable ({error}); set COURSE_LIB_CACHE to a writable folder")
    return report


def main() -> int:
    report = check_environment()
    print(repr(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
