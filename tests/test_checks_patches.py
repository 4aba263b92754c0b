"""The lesson 01 checks pass on the reference, fail precisely on wrong answers, say 'todo' on stubs."""

import torch
from einops import rearrange

from course_lib.checks.patches import (check_count_embedding_parameters, check_count_patches,
                                       check_input_embedding, check_patchify)
from course_lib.patches import patchify


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def reference_input_embedding(images, weight, bias, cls_token, pos_embedding, patch_size):
    tokens = patchify(images, patch_size) @ weight.T + bias
    cls = cls_token.expand(images.shape[0], 1, -1)
    return torch.cat([cls, tokens], dim=1) + pos_embedding


def reference_count_parameters(image_size, patch_size, channels, embed_dim):
    N = (image_size[0] // patch_size) * (image_size[1] // patch_size)
    return embed_dim * patch_size * patch_size * channels + embed_dim + embed_dim + (N + 1) * embed_dim


def test_checks_pass_on_reference():
    assert check_patchify(patchify).passed
    assert check_count_patches(lambda size, P: (size[0] // P) * (size[1] // P)).passed
    assert check_count_embedding_parameters(reference_count_parameters).passed
    assert check_input_embedding(reference_input_embedding).passed


def test_checks_report_stubs_as_todo():
    for check in (check_patchify, check_count_patches, check_count_embedding_parameters, check_input_embedding):
        result = check(stub)
        assert result.status == "todo"
        assert "not implemented yet" in repr(result)


def test_patchify_check_names_the_mistake():
    channel_first = lambda images, P: rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=P, p2=P)
    result = check_patchify(channel_first)
    assert result.status == "fail"
    assert "(p1 p2 c)" in result.message and "wrong order" in result.message
    column_major = lambda images, P: rearrange(images, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=P, p2=P)
    assert "column by column" in check_patchify(column_major).message


def test_patchify_check_reports_shapes():
    transposed = lambda images, P: patchify(images, P).transpose(1, 2)
    result = check_patchify(transposed)
    assert result.status == "fail"
    assert "(2, 48, 64)" in result.message and "(2, 64, 48)" in result.message


def test_patchify_check_reports_first_difference():
    off_by_one = lambda images, P: patchify(images, P) + (torch.arange(patchify(images, P).numel()).reshape(patchify(images, P).shape) == 5)
    result = check_patchify(off_by_one)
    assert result.status == "fail" and "first at index (0, 0, 5)" in result.message


def test_crash_in_student_code_is_a_failure_not_an_exception():
    def crashes(images, P):
        return images.reshape(7, -1, 3)
    result = check_patchify(crashes)
    assert result.status == "fail" and "RuntimeError" in result.message


def test_count_checks_fail_with_hint():
    result = check_count_embedding_parameters(lambda size, P, C, D: D * P * P * C)
    assert result.status == "fail" and "positions" in result.message
    assert check_count_patches(lambda size, P: size[0] // P).status == "fail"


def test_input_embedding_check_catches_missing_positions():
    def no_positions(images, weight, bias, cls_token, pos_embedding, patch_size):
        tokens = patchify(images, patch_size) @ weight.T + bias
        return torch.cat([cls_token.expand(images.shape[0], 1, -1), tokens], dim=1)
    result = check_input_embedding(no_positions)
    assert result.status == "fail" and "differs" in result.message
