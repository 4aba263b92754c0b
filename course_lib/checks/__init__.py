"""Instant feedback for the exercises: the mechanism every lesson's checks share.

Each lesson has a module here named after the lesson's module (``checks.patches`` for
``course_lib.patches``) with one ``check_<exercise>`` function per exercise. A notebook calls it in
the cell right after the exercise::

    from course_lib.checks.patches import check_patchify
    check_patchify(patchify)          # shows  ✅ patchify: ...  or  ❌ patchify: what is wrong

A check never raises. It returns a :class:`CheckResult` that the notebook shows:

- ✅ pass: the student's code agrees with the reference on every case tried;
- ❌ fail: exactly what is wrong (expected vs got shape, the first differing element, a hint);
- ⏳ todo: the exercise still holds its stub (``raise NotImplementedError``), so a fresh student
  copy runs top to bottom without stopping.

Writing a check: put the comparisons in a small function that raises :class:`CheckFailure` (the
``expect_*`` helpers below do) and returns a one-line success message, then hand it to
:func:`run_check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch

Status = Literal["pass", "fail", "todo"]

_SYMBOLS = {"pass": "✅", "fail": "❌", "todo": "⏳"}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one exercise check; the notebook shows its ``repr``."""

    name: str  # the exercise, e.g. "patchify"
    status: Status  # "pass", "fail" or "todo" (stub not replaced yet)
    message: str  # what passed, or what is wrong and a hint

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __repr__(self) -> str:
        return f"{_SYMBOLS[self.status]} {self.name}: {self.message}"


class CheckFailure(Exception):
    """Raised inside a check when the student's answer is wrong; its text is shown to them."""


def run_check(name: str, body: Callable[[], str]) -> CheckResult:
    """Run one check body and turn whatever happens into a :class:`CheckResult`.

    Args:
        name: the exercise's name, shown first.
        body: calls the student's code, compares with the reference (raising
            :class:`CheckFailure` on a difference) and returns a success message.

    Returns:
        ``pass`` with the body's message; ``todo`` if the student's code raised
        ``NotImplementedError`` (the stub); ``fail`` with the reason otherwise.
    """
    try:
        message = body()
    except NotImplementedError:
        return CheckResult(name, "todo", "not implemented yet: replace the "
                           "`raise NotImplementedError` stub with your code, then run this cell again.")
    except CheckFailure as failure:
        return CheckResult(name, "fail", str(failure))
    except Exception as error:  # the student's code crashed: say where, not a traceback
        return CheckResult(name, "fail", f"your code raised {type(error).__name__}: {error}")
    return CheckResult(name, "pass", message)


def _with_hint(message: str, hint: str | None) -> str:
    return f"{message}\n   Hint: {hint}" if hint else message


def expect_type(got: Any, expected_type: type | tuple[type, ...], what: str, hint: str | None = None) -> None:
    """Fail unless ``got`` is an instance of ``expected_type``."""
    if not isinstance(got, expected_type):
        names = (expected_type.__name__ if isinstance(expected_type, type)
                 else " or ".join(t.__name__ for t in expected_type))
        raise CheckFailure(_with_hint(f"{what} should be a {names}, got {type(got).__name__}", hint))


def expect_equal(got: Any, expected: Any, what: str, hint: str | None = None) -> None:
    """Fail unless ``got == expected`` (for ints, strings, tuples, ...)."""
    if got != expected:
        raise CheckFailure(_with_hint(f"{what}: expected {expected!r}, got {got!r}", hint))


def expect_shape(got: torch.Tensor, expected: Sequence[int], what: str, hint: str | None = None) -> None:
    """Fail unless ``got`` is a tensor of exactly the shape ``expected``."""
    expect_type(got, torch.Tensor, what, hint)
    if tuple(got.shape) != tuple(expected):
        raise CheckFailure(_with_hint(
            f"{what} has shape {tuple(got.shape)}, expected {tuple(expected)}", hint))


def expect_close(got: torch.Tensor, expected: torch.Tensor, what: str, *, atol: float = 1e-5,
                 rtol: float = 1e-4, hint: str | None = None) -> None:
    """Fail unless ``got`` matches ``expected`` in shape and, elementwise, within tolerance.

    The failure names the first differing element (by index), both values, and how many
    elements differ, which is usually enough to see whether an axis is swapped or a scale is off.
    """
    expect_shape(got, expected.shape, what, hint)
    got_values = got.detach().to(torch.float64)
    expected_values = expected.detach().to(torch.float64)
    close = torch.isclose(got_values, expected_values, atol=atol, rtol=rtol)
    if bool(close.all()):
        return
    mismatched = (~close).nonzero()
    first = tuple(int(i) for i in mismatched[0])
    raise CheckFailure(_with_hint(
        f"{what} differs at {len(mismatched)} of {close.numel()} elements; first at index {first}: "
        f"got {got_values[first].item():.6g}, expected {expected_values[first].item():.6g}", hint))


def expect_true(condition: bool, message: str, hint: str | None = None) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailure(_with_hint(message, hint))
