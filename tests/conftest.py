"""Shared test setup: CPU only, few threads, deterministic, and a private cache directory."""

import os

import open_clip
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Point course_lib's cache at an empty temporary folder for one test."""
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def model():
    """A tiny untrained open_clip CLIP (the configuration in the course's FACTS); D = 32. For lesson 03's tests."""
    torch.manual_seed(0)
    return open_clip.CLIP(32, dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                          dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=2)).eval()


@pytest.fixture(scope="module")
def tokenizer():
    """open_clip's BPE tokenizer with the context of :func:`model`."""
    return open_clip.SimpleTokenizer(context_length=16)


def pytest_collection_modifyitems(items):
    # nbval items (whole notebooks) get the "notebooks" marker so `-m "not notebooks"` skips them.
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.notebooks)
    # The browser tests go last: by then the notebooks have trained and cached the tiny models,
    # so the lessons they open load in seconds instead of training inside the browser.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")
