"""Checks for lesson 05's exercises: the uniform frame sampler, and the resampler's cross-attention.

    check_sample_frame_indices(sample_frame_indices)        # your sampler vs course_lib.video's
    check_perceiver_attention(perceiver_cross_attention)    # your attention vs PerceiverAttention
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from course_lib.checks import CheckFailure, CheckResult, expect_close, expect_shape, expect_true, run_check
from course_lib.video import PerceiverAttention, ResamplerConfig, sample_frame_indices

SAMPLER_CASES = [(100, 4), (240, 64), (601, 64), (1000, 7), (65, 64), (64, 64), (10, 64), (1, 1)]
SAMPLER_HINT = ("cut [0, num_frames) into num_samples equal segments and take each one's centre, "
                "(2 * i + 1) * num_frames // (2 * num_samples); return every frame when the video is short")


def _as_int_list(indices, what: str) -> list[int]:
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    try:
        values = list(indices)
    except TypeError:
        raise CheckFailure(f"{what} should be a list of ints, got {type(indices).__name__}") from None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in values):
        raise CheckFailure(f"{what} should hold ints, got {values[:6]!r}...",)
    return values


def check_sample_frame_indices(student: Callable[..., list[int]]) -> CheckResult:
    """Compare the student's ``sample_frame_indices(num_frames, num_samples)`` with the library's."""

    def body() -> str:
        for num_frames, num_samples in SAMPLER_CASES:
            what = f"sample_frame_indices({num_frames}, {num_samples})"
            got = _as_int_list(student(num_frames, num_samples), what)
            expected = sample_frame_indices(num_frames, num_samples)
            expect_true(len(got) == len(expected), f"{what} returned {len(got)} indices, expected "
                        f"min(num_frames, num_samples) = {len(expected)}", SAMPLER_HINT)
            expect_true(all(0 <= i < num_frames for i in got),
                        f"{what} has indices outside [0, {num_frames}): {[i for i in got if not 0 <= i < num_frames][:5]}",
                        SAMPLER_HINT)
            expect_true(all(a < b for a, b in zip(got, got[1:])),
                        f"{what} is not strictly increasing: {got[:8]}...", SAMPLER_HINT)
            if got != expected:
                first = next(n for n, (a, b) in enumerate(zip(got, expected)) if a != b)
                raise CheckFailure(f"{what}: index {first} is {got[first]}, expected {expected[first]} "
                                   f"(got {got[:5]}..., expected {expected[:5]}...)\n   Hint: {SAMPLER_HINT}")
        for bad in ((0, 4), (10, 0), (-3, 4)):
            try:
                student(*bad)
            except ValueError:
                continue
            except NotImplementedError:
                raise
            except Exception as error:
                raise CheckFailure(f"sample_frame_indices{bad} raised {type(error).__name__}, expected ValueError") from None
            raise CheckFailure(f"sample_frame_indices{bad} returned instead of raising ValueError\n"
                               "   Hint: a count must be positive; raise ValueError naming the bad value")
        return (f"{len(SAMPLER_CASES)} videos from 1 to 1000 frames sampled exactly like "
                "course_lib.video.sample_frame_indices; bad counts raise ValueError")

    return run_check("sample_frame_indices", body)


def _variant(latents: torch.Tensor, media: torch.Tensor, attention: PerceiverAttention, *,
             latents_in_kv: bool = True, layer_norms: bool = True, scale: bool = True) -> torch.Tensor:
    """The attention with one ingredient left out: recognising a common mistake makes a precise hint."""
    if layer_norms:
        media, latents = attention.norm_media(media), attention.norm_latents(latents)
    kv_input = torch.cat([media, latents], dim=1) if latents_in_kv else media
    q = attention.to_q(latents)
    k, v = attention.to_kv(kv_input).chunk(2, dim=-1)
    q, k, v = (x.unflatten(-1, (attention.num_heads, -1)).transpose(1, 2) for x in (q, k, v))  # (B, h, n, d)
    scores = q @ k.transpose(-1, -2) / (math.sqrt(q.shape[-1]) if scale else 1.0)  # (B, h, L, M [+ L])
    return attention.to_out((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))  # (B, L, D)


MISTAKES = [
    (dict(latents_in_kv=False), "keys and values must come from torch.cat([media, latents], dim=1): the latents "
                                "attend to the frames *and to themselves*"),
    (dict(layer_norms=False), "normalise first: media = attention.norm_media(media), "
                              "latents = attention.norm_latents(latents) (two separate LayerNorms)"),
    (dict(scale=False), "divide the scores q @ k^T by sqrt(head_dim) before the softmax"),
]


def check_perceiver_attention(student: Callable[..., torch.Tensor]) -> CheckResult:
    """Compare the student's ``perceiver_cross_attention(latents, media, attention)`` with ``attention(latents, media)``."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            attention = PerceiverAttention(ResamplerConfig(dim=16, num_heads=2, head_dim=8)).eval()
        for B, L, M in ((2, 3, 10), (1, 4, 1), (3, 1, 64)):
            latents = torch.randn(B, L, 16, generator=generator)  # (B, L, D)
            media = torch.randn(B, M, 16, generator=generator)  # (B, T*N, D)
            with torch.no_grad():
                got = student(latents, media, attention)
                expected = attention(latents, media)
            what = f"output for latents {tuple(latents.shape)} and media {tuple(media.shape)}"
            expect_shape(got, expected.shape, what, "one vector per latent: (B, L, D), whatever the number of "
                         "media tokens M; did you merge the heads back with rearrange 'b h l d -> b l (h d)'?")
            for mistake, hint in MISTAKES:
                with torch.no_grad():
                    wrong = _variant(latents, media, attention, **mistake)
                if torch.allclose(got, wrong, atol=1e-5) and not torch.allclose(got, expected, atol=1e-5):
                    raise CheckFailure(f"{what} has the right shape but the wrong values\n   Hint: {hint}")
            expect_close(got, expected, what, atol=1e-5,
                         hint="q from the latents; k, v from cat(media, latents); scores (B, h, L, M + L); "
                              "softmax over the last axis; out = attention.to_out(...)")
        return "matches PerceiverAttention for 3 shapes: q (B, h, L, d), k and v (B, h, M + L, d), out (B, L, D)"

    return run_check("perceiver_cross_attention", body)
