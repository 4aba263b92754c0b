"""The lesson 05 checks pass on the reference, fail precisely on wrong answers, say 'todo' on stubs."""

import numpy as np
import torch
from einops import rearrange

from course_lib.checks.video import _variant, check_perceiver_attention, check_sample_frame_indices
from course_lib.video import sample_frame_indices


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def reference_attention(latents, media, attention):
    return _variant(latents, media, attention)


def test_checks_pass_on_reference():
    assert check_sample_frame_indices(sample_frame_indices).passed
    assert check_perceiver_attention(lambda latents, media, attention: attention(latents, media)).passed
    assert check_perceiver_attention(reference_attention).passed


def test_checks_report_stubs_as_todo():
    for check in (check_sample_frame_indices, check_perceiver_attention):
        result = check(stub)
        assert result.status == "todo" and "not implemented yet" in repr(result)


def test_sampler_check_accepts_tensors_and_arrays():
    as_tensor = lambda T, S: torch.tensor(sample_frame_indices(T, S))
    assert check_sample_frame_indices(as_tensor).passed
    linspace = lambda T, S: np.linspace(0, T - 1, min(T, S)).round().astype(int)  # numpy ints are not ints
    assert check_sample_frame_indices(linspace).status == "fail"


def test_sampler_check_names_the_mistake():
    def linspace_with_ends(num_frames, num_samples):  # a popular variant: first and last frame included
        if num_frames <= 0 or num_samples <= 0:
            raise ValueError("counts must be positive")
        return [round(x) for x in np.linspace(0, num_frames - 1, min(num_frames, num_samples)).tolist()]
    result = check_sample_frame_indices(linspace_with_ends)
    assert result.status == "fail" and "sample_frame_indices(100, 4): index 0 is 0, expected 12" in result.message
    assert "centre" in result.message

    def always_num_samples(num_frames, num_samples):  # centres, but no special case for short videos
        return [(2 * i + 1) * num_frames // (2 * num_samples) for i in range(num_samples)]
    result = check_sample_frame_indices(always_num_samples)
    assert result.status == "fail" and "returned 64 indices, expected min(num_frames, num_samples) = 10" in result.message

    def no_validation(num_frames, num_samples):
        return sample_frame_indices(max(num_frames, 1), max(num_samples, 1))
    result = check_sample_frame_indices(no_validation)
    assert result.status == "fail" and "(0, 4) returned instead of raising ValueError" in result.message


def test_attention_check_names_the_mistakes():
    for mistake, fragment in [(dict(latents_in_kv=False), "torch.cat([media, latents], dim=1)"),
                              (dict(layer_norms=False), "attention.norm_media"),
                              (dict(scale=False), "sqrt(head_dim)")]:
        result = check_perceiver_attention(lambda latents, media, attention: _variant(latents, media, attention, **mistake))
        assert result.status == "fail" and fragment in result.message, (mistake, result)


def test_attention_check_reports_shapes_and_crashes():
    heads_not_merged = lambda latents, media, attention: rearrange(
        attention(latents, media), "b l (h d) -> b h l d", h=attention.num_heads)
    result = check_perceiver_attention(heads_not_merged)
    assert result.status == "fail" and "shape (2, 2, 3, 8), expected (2, 3, 16)" in result.message

    def crashes(latents, media, attention):
        return latents @ media  # (B, L, D) @ (B, M, D): the inner sizes do not match
    result = check_perceiver_attention(crashes)
    assert result.status == "fail" and "your code raised RuntimeError" in result.message
