"""Checks for lesson 01 (patches): patchify, counting patches and parameters, the input embedding."""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange

from course_lib.checks import (CheckFailure, CheckResult, expect_close, expect_equal, expect_shape,
                               expect_type, run_check)
from course_lib.patches import PatchEmbedding, patchify

# (B, C, H, W, P): the lecture's example, a non-square image, one channel, a single patch.
PATCHIFY_CASES = [(2, 3, 32, 32, 4), (1, 3, 24, 40, 8), (2, 1, 6, 6, 2), (1, 3, 16, 16, 16)]

# Known mistakes, recognised so the hint can say what happened.
_KNOWN_MISTAKES = {
    "b c (h p1) (w p2) -> b (h w) (c p1 p2)":
        "each patch is flattened channel by channel; the lecture goes pixel by pixel, a pixel's C values together: (p1 p2 c)",
    "b c (h p1) (w p2) -> b (w h) (p1 p2 c)":
        "patches come column by column; take them row by row over the image: (h w)",
    "b c (h p1) (w p2) -> b (h w) (p2 p1 c)":
        "each patch is read column by column; read its pixels row by row: (p1 p2 c)",
}


def _diagnose(got: torch.Tensor, images: torch.Tensor, patch_size: int) -> str | None:
    for pattern, hint in _KNOWN_MISTAKES.items():
        candidate = rearrange(images, pattern, p1=patch_size, p2=patch_size)
        if candidate.shape == got.shape and torch.allclose(candidate, got):
            return hint
    return None


def check_patchify(student_patchify: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Compare the student's ``patchify(images, patch_size)`` with the reference on several sizes."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        for B, C, H, W, P in PATCHIFY_CASES:
            images = torch.rand(B, C, H, W, generator=generator)
            got = student_patchify(images, P)
            expected = patchify(images, P)
            what = f"patchify(images of shape {(B, C, H, W)}, patch_size={P})"
            expect_shape(got, expected.shape, what,
                         hint=f"expect (B, N, P*P*C) with N = (H/P)*(W/P) = {expected.shape[1]}")
            if not torch.allclose(got, expected):
                hint = _diagnose(got, images, P)
                if hint:
                    raise CheckFailure(f"{what} has the right shape but the wrong order.\n   Hint: {hint}")
            expect_close(got, expected, what)
        return f"matches the reference on {len(PATCHIFY_CASES)} image sizes, square and not"

    return run_check("patchify", body)


# (image_size, patch_size, channels, embed_dim): the lecture's example, ViT-B/16, CLIP ViT-L/14@336.
COUNT_CASES = [((32, 32), 4, 3, 64), ((224, 224), 16, 3, 768), ((336, 336), 14, 3, 1024), ((24, 40), 8, 1, 16)]


def check_count_patches(student_count_patches: Callable[[tuple[int, int], int], int]) -> CheckResult:
    """``count_patches(image_size, patch_size)`` must give N = (H/P)(W/P)."""

    def body() -> str:
        for (H, W), P, _, _ in COUNT_CASES:
            expect_equal(student_count_patches((H, W), P), (H // P) * (W // P),
                         f"count_patches(({H}, {W}), {P})", hint="patches down times patches across")
        return "196 patches for ViT-B/16 at 224 px, 576 for CLIP ViT-L/14 at 336 px"

    return run_check("count_patches", body)


def check_count_embedding_parameters(student_count: Callable[[tuple[int, int], int, int, int], int]) -> CheckResult:
    """``count_embedding_parameters(image_size, patch_size, channels, embed_dim)``: W, bias, CLS, positions."""

    def body() -> str:
        for image_size, P, C, D in COUNT_CASES:
            module = PatchEmbedding(image_size=image_size, patch_size=P, in_channels=C, embed_dim=D)
            expected = sum(parameter.numel() for parameter in module.parameters())
            N = module.num_patches
            expect_equal(student_count(image_size, P, C, D), expected,
                         f"count_embedding_parameters({image_size}, {P}, {C}, {D})",
                         hint=f"W is D x (P*P*C) = {D * P * P * C}, bias D = {D}, CLS D = {D}, "
                              f"positions (N+1) x D with N = {N}")
        return "W, bias, CLS token and positional embeddings all counted"

    return run_check("count_embedding_parameters", body)


def check_input_embedding(student_embed: Callable[..., torch.Tensor]) -> CheckResult:
    """``input_embedding(images, weight, bias, cls_token, pos_embedding, patch_size)`` vs PatchEmbedding."""

    def body() -> str:
        torch.manual_seed(0)
        module = PatchEmbedding(image_size=(32, 32), patch_size=4, embed_dim=16)
        images = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            expected = module(images)
            got = student_embed(images, module.proj.weight, module.proj.bias, module.cls_token,
                                module.pos_embedding, 4)
        expect_type(got, torch.Tensor, "input_embedding(...)")
        expect_shape(got, expected.shape, "input_embedding(images (2, 3, 32, 32), ..., patch_size=4)",
                     hint="(B, N+1, D): 64 patch tokens plus the CLS token in front")
        expect_close(got, expected, "input embeddings",
                     hint="v_i = W f(p_i) + b + v_i^pos; the CLS token goes first and gets position 0")
        return "v_i = W f(p_i) + v_i^pos with the CLS token in front, as PatchEmbedding computes it"

    return run_check("input_embedding", body)
