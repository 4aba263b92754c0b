"""The lesson 04 checks pass on the reference, fail precisely on wrong answers, say 'todo' on stubs."""

import torch
import torch.nn as nn

from course_lib.checks.connector import check_freeze_for_stage1, check_projector, check_splice
from course_lib.connector import IGNORE_INDEX, SplicedSequence, build_projector, set_trainable, splice_image


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def test_checks_pass_on_reference():
    assert check_projector(build_projector).passed
    assert check_splice(splice_image).passed
    assert check_freeze_for_stage1(lambda model: set_trainable(model, 1)).passed


def test_splice_check_accepts_a_plain_tuple():
    def as_tuple(*args):
        out = splice_image(*args)
        return out.embeds, out.attention_mask, out.labels

    assert check_splice(as_tuple).passed


def test_checks_report_stubs_as_todo():
    for check in (check_projector, check_splice, check_freeze_for_stage1):
        result = check(stub)
        assert result.status == "todo"
        assert "not implemented yet" in repr(result)


def test_projector_check_names_the_mistakes():
    relu = check_projector(lambda kind, v, d: nn.Sequential(nn.Linear(v, d), nn.ReLU(), nn.Linear(d, d))
                           if kind == "mlp2x_gelu" else nn.Linear(v, d))
    assert relu.status == "fail" and "no GELU" in relu.message
    one_layer = check_projector(lambda kind, v, d: nn.Linear(v, d))
    assert one_layer.status == "fail" and "number of parameters" in one_layer.message
    wrong_width = check_projector(lambda kind, v, d: nn.Linear(v, v))
    assert wrong_width.status == "fail" and "shape" in wrong_width.message

    def no_error(kind, v, d):
        return nn.Linear(v, d) if kind == "linear" else build_projector("mlp2x_gelu", v, d)

    assert "should raise ValueError" in check_projector(no_error).message


def test_splice_check_names_the_mistakes():
    def image_labelled_zero(prompt, answer, image, embedding, image_id):
        out = splice_image(prompt, answer, image, embedding, image_id)
        position = int((prompt == image_id).nonzero()[0])
        out.labels[position:position + image.shape[0]] = 0
        return out

    result = check_splice(image_labelled_zero)
    assert result.status == "fail" and "image positions" in result.message

    def prompt_learned(prompt, answer, image, embedding, image_id):
        out = splice_image(prompt, answer, image, embedding, image_id)
        position = int((prompt == image_id).nonzero()[0])
        out.labels[:position] = prompt[:position]
        if position == 0:
            out.labels[image.shape[0]] = prompt[1]
        return out

    result = check_splice(prompt_learned)
    assert result.status == "fail" and "prompt is given" in result.message

    def keeps_image_token(prompt, answer, image, embedding, image_id):
        position = int((prompt == image_id).nonzero()[0])
        text = embedding(torch.cat([prompt, answer]))
        embeds = torch.cat([text[:position + 1], image, text[position + 1:]])
        labels = torch.cat([torch.full((len(embeds) - len(answer),), IGNORE_INDEX), answer])
        return SplicedSequence(embeds, torch.ones(len(embeds), dtype=torch.int64), labels)

    result = check_splice(keeps_image_token)
    assert result.status == "fail" and "replaced, not kept" in result.message


def test_freeze_check_names_what_still_trains():
    result = check_freeze_for_stage1(lambda model: set_trainable(model, 2))
    assert result.status == "fail" and "model.lm" in result.message
    result = check_freeze_for_stage1(lambda model: model.lm.requires_grad_(False))
    assert result.status == "fail" and "model.vision" in result.message

    def everything_frozen(model):
        model.requires_grad_(False)

    result = check_freeze_for_stage1(everything_frozen)
    assert result.status == "fail" and "projector parameters frozen" in result.message
