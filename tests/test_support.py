"""runtime, doctor, widgets and nbtools: the support modules every lesson uses."""

import json

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output

from course_lib import nbtools
from course_lib.doctor import check_environment
from course_lib.runtime import cache_dir, data_dir, seed_everything, torch_threads
from course_lib.widgets import interactive_figure

matplotlib.use("Agg")


def test_seed_everything_is_deterministic():
    seed_everything(3)
    first = torch.rand(4)
    seed_everything(3)
    assert torch.equal(first, torch.rand(4))
    with pytest.raises(ValueError, match="-1"):
        seed_everything(-1)


def test_torch_threads_sets_then_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("the body failed")
    assert torch.get_num_threads() == before  # restored even then
    with torch_threads(None):
        assert torch.get_num_threads() == before
    for bad in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="positive int"), torch_threads(bad):
            pass


def test_cache_dir_follows_environment(private_cache):
    assert cache_dir() == private_cache and private_cache.is_dir()


def test_data_dir_has_the_photos():
    assert sorted(path.name for path in (data_dir() / "photos").glob("*.jpg")) == [
        "astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg"]


def test_doctor_reports_ready_here(private_cache):
    report = check_environment()
    assert report.ok, report.problems
    assert report.verdict.startswith("VERDICT: ready")
    text = repr(report)
    for package in ("torch", "torchaudio", "open_clip_torch", "jupyterlab", "ipywidgets", "jupyterlab_widgets"):
        assert package in text
    assert "matches ipywidgets" in text and "writable" in text


def test_doctor_reports_unwritable_cache(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    report = check_environment(cache=locked / "missing")
    assert not report.ok and "COURSE_LIB_CACHE" in report.verdict


def test_interactive_figure_returns_live_widget(monkeypatch):
    shown = []
    monkeypatch.setattr("course_lib.widgets.display", shown.append)
    calls = []

    def draw(size=3):
        calls.append(size)
        fig, ax = plt.subplots()
        ax.plot(range(size))
        return fig

    slider = widgets.IntSlider(value=3, min=1, max=9)
    box = interactive_figure(draw, size=slider)
    assert isinstance(box, widgets.VBox) and calls[0] == 3  # static preview drawn at the default
    assert isinstance(shown[0], matplotlib.figure.Figure)
    slider.value = 5
    assert 5 in calls  # the live figure redraws when the control moves


def test_interactive_figure_rejects_bad_use():
    with pytest.raises(TypeError, match="at least one control"):
        interactive_figure(lambda: None)
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        interactive_figure(lambda size: size, size=widgets.IntSlider(1))


def test_nbtools_clean_keeps_only_checked_outputs():
    checked = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)", execution_count=2,
                            outputs=[new_output("stream", name="stdout", text="1\n")])
    unchecked = new_code_cell("print(2)", execution_count=3, outputs=[new_output("stream", name="stdout", text="2\n")])
    notebook = new_notebook(cells=[checked, unchecked], metadata={"widgets": {"state": {}}})
    assert len(nbtools.problems(notebook)) == 3  # widget state, unchecked count, unchecked output
    cleaned = nbtools.clean(notebook)
    assert nbtools.problems(cleaned) == []
    assert cleaned.cells[0].outputs[0]["text"] == "1\n" and cleaned.cells[1].outputs == []


def test_nbtools_check_command(tmp_path, capsys):
    path = tmp_path / "dirty.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1", execution_count=1)]), path)
    assert nbtools.main(["check", str(path)]) == 1
    assert "execution count" in capsys.readouterr().out
    assert nbtools.main(["clean", str(path)]) == 0
    assert nbtools.main(["check", str(path)]) == 0
