"""The check mechanism: results, messages with the first differing element, never raising."""

import pytest
import torch

from course_lib.checks import (CheckFailure, CheckResult, expect_close, expect_equal, expect_shape, expect_true,
                               expect_type, run_check)


def test_run_check_statuses():
    assert run_check("x", lambda: "fine") == CheckResult("x", "pass", "fine")

    def stub():
        raise NotImplementedError
    assert run_check("x", stub).status == "todo"

    def wrong():
        raise CheckFailure("expected 1, got 2")
    assert run_check("x", wrong) == CheckResult("x", "fail", "expected 1, got 2")

    def crash():
        return [][1]
    result = run_check("x", crash)
    assert result.status == "fail" and "IndexError" in result.message


def test_repr_symbols():
    assert repr(CheckResult("loss", "pass", "ok")) == "✅ loss: ok"
    assert repr(CheckResult("loss", "fail", "bad")).startswith("❌ loss")
    assert repr(CheckResult("loss", "todo", "later")).startswith("⏳ loss")
    assert CheckResult("loss", "pass", "ok").passed and not CheckResult("loss", "todo", "").passed


def test_expect_close_names_first_difference():
    expected = torch.zeros(2, 3)
    got = expected.clone()
    got[1, 2] = 0.5
    with pytest.raises(CheckFailure) as raised:
        expect_close(got, expected, "values", hint="look at the last column")
    message = str(raised.value)
    assert "1 of 6 elements" in message and "(1, 2)" in message and "got 0.5" in message
    assert "Hint: look at the last column" in message
    expect_close(expected + 1e-7, expected, "values")  # within tolerance: passes


def test_expect_shape_and_type():
    with pytest.raises(CheckFailure, match=r"shape \(3, 2\), expected \(2, 3\)"):
        expect_shape(torch.zeros(3, 2), (2, 3), "x")
    with pytest.raises(CheckFailure, match="should be a Tensor, got list"):
        expect_shape([1, 2], (2,), "x")
    with pytest.raises(CheckFailure, match="int or float"):
        expect_type("1", (int, float), "x")
    with pytest.raises(CheckFailure, match="expected 3, got 4"):
        expect_equal(4, 3, "count")
    with pytest.raises(CheckFailure, match="nope"):
        expect_true(False, "nope")
