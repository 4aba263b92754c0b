"""Run-time helpers every lesson shares: seeding, training threads, the local cache and its files.

Deterministic notebooks need every random generator seeded and a fixed number of threads; trained
tiny models are cached on disk so that a later lesson can reuse what an earlier one trained instead
of training again. A cache file is only trusted when its checksum and the settings it was made with
match; anything else is retrained.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

CACHE_ENV_VAR = "COURSE_LIB_CACHE"

# The course's models train on 2 threads, the 2 cores of the laptops it is sized for. The count is
# fixed rather than "all cores" because it sets the order in which sums are added up, hence the
# trained weights: with a fixed count a 16-core machine trains the same model as a 2-core one.
TRAINING_THREADS = 2


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's random generators.

    Args:
        seed: any non-negative integer.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for code that wants its own stream.

    Example:
        >>> g = seed_everything(0)
        >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=seed_everything(0)).item()
        True
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the ``with`` body with torch on ``count`` CPU threads, then restore the previous count.

    ``None`` leaves the setting alone. On a quiet 2-core machine two threads train the course's tiny
    models about 1.4-1.7x faster than one; on a machine busy with other work one thread can be
    faster, because two threads wait for each other at every small operation.

    Example:
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
    """
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError(f"thread count must be a positive int or None, got {count!r}")
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_dir() -> Path:
    """The directory where trained models and generated files are cached, created if missing.

    It is ``$COURSE_LIB_CACHE`` when that is set (``make lab`` and ``make test`` set it to the
    repository's ``.cache/``), otherwise ``~/.cache/course_lib``. Deleting it is always safe:
    everything in it is regenerated on demand.
    """
    path = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "course_lib")
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The repository's ``data/`` folder, where the course's small shipped files live."""
    path = Path(__file__).resolve().parent.parent / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"the course's data folder {path} is missing; course_lib must be installed "
                                "in editable mode from a checkout of the course (make lab does that)")
    return path


# ----------------------------------------------------------------------------- cache files

def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape, dtype and bytes, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, dict[str, torch.Tensor]], description: dict) -> None:
    """Write ``tensors`` (state dicts) to ``path`` and ``description`` + the file's SHA-256 beside it (.json).

    Both are written under temporary names and renamed, so an interrupted save leaves no half file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(tensors, partial)
    description = {**description, "sha256": _file_sha256(partial)}
    partial.replace(path)
    json_partial = path.with_suffix(".json.partial")
    json_partial.write_text(json.dumps(description, indent=1))
    json_partial.replace(path.with_suffix(".json"))


def load_checkpoint(path: Path, expected: dict) -> tuple[dict | None, dict, str]:
    """Read what :func:`save_checkpoint` wrote, if it is intact and was made with ``expected``'s settings.

    Returns:
        ``(tensors, description, "")`` when the cache is good; ``(None, {}, why)`` otherwise, with
        ``why`` saying what was wrong (missing, other settings, checksum mismatch, unreadable).
        Tensors are loaded with ``weights_only=True``: a cache file cannot run code.
    """
    description_path = path.with_suffix(".json")
    if not path.exists() or not description_path.exists():
        return None, {}, ""
    try:
        description = json.loads(description_path.read_text())
    except (OSError, ValueError):
        return None, {}, f"its description {description_path.name} is unreadable"
    for key, value in expected.items():
        if description.get(key) != value:
            return None, {}, f"it was made with a different {key}"
    if _file_sha256(path) != description.get("sha256"):
        return None, {}, "its SHA-256 checksum does not match (a corrupt or partly written file)"
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: retrain rather than fail
        return None, {}, f"it could not be read ({type(error).__name__})"
    return tensors, description, ""


def settings_key(settings: dict) -> str:
    """A short hash of JSON-able settings, used in cache file names."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
