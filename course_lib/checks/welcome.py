"""Checks for lesson 00 (welcome): one tiny exercise to meet the check mechanism."""

from __future__ import annotations

from typing import Callable

import torch

from course_lib.checks import CheckResult, expect_equal, run_check

# Image batches of shape (B, C, H, W): one RGB photo, a batch of grey images, a tiny CLIP batch.
SHAPES = [(1, 3, 224, 224), (8, 1, 28, 28), (64, 3, 32, 32)]


def check_count_values(student_count_values: Callable[[torch.Tensor], int]) -> CheckResult:
    """``count_values(images)`` must return B * C * H * W as an int."""

    def body() -> str:
        for shape in SHAPES:
            got = student_count_values(torch.zeros(shape))
            B, C, H, W = shape
            expect_equal(got, B * C * H * W, f"count_values(a tensor of shape {shape})",
                         hint="multiply the four sizes, or use images.numel()")
            expect_equal(type(got), int, f"the type of count_values(...) for shape {shape}",
                         hint="return a Python int: int(...) or images.numel()")
        return f"right for all {len(SHAPES)} shapes; a 224 x 224 RGB photo holds 150,528 numbers"

    return run_check("count_values", body)
