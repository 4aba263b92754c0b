"""The lesson 02 checks pass on the reference, fail precisely on known mistakes, say 'todo' on stubs."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.tiny_clip import check_clip_logits, check_contrastive_loss
from course_lib.tiny_clip import contrastive_loss

torch.set_num_threads(1)


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def reference_clip_logits(model, images, token_ids):
    image_embeddings = F.normalize(model.encode_image(images), dim=-1)
    text_embeddings = F.normalize(model.encode_text(token_ids), dim=-1)
    return image_embeddings, text_embeddings, model.logit_scale.exp() * image_embeddings @ text_embeddings.T


def test_checks_pass_on_reference():
    assert check_contrastive_loss(contrastive_loss).passed
    assert check_clip_logits(reference_clip_logits).passed


def test_checks_report_stubs_as_todo():
    for check in (check_contrastive_loss, check_clip_logits):
        result = check(stub)
        assert result.status == "todo"
        assert "not implemented yet" in repr(result)


def one_direction(images, texts, scale):
    logits = scale * images @ texts.T
    return F.cross_entropy(logits, torch.arange(len(images)))


def not_averaged(images, texts, scale):
    logits = scale * images @ texts.T
    labels = torch.arange(len(images))
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def unscaled(images, texts, scale):
    logits = images @ texts.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def as_float(images, texts, scale):
    return contrastive_loss(images, texts, scale).item()


def detached(images, texts, scale):
    return contrastive_loss(images, texts, scale).detach()


@pytest.mark.parametrize("wrong, words", [
    (one_direction, "add the other direction"),
    (not_averaged, "divide by 2"),
    (unscaled, "not multiplied by logit_scale"),
    (as_float, "should be a Tensor"),
    (detached, "no gradient"),
])
def test_loss_check_names_the_mistake(wrong, words):
    result = check_contrastive_loss(wrong)
    assert result.status == "fail"
    assert words in result.message


def unnormalised(model, images, token_ids):
    image_embeddings, text_embeddings = model.encode_image(images), model.encode_text(token_ids)
    return image_embeddings, text_embeddings, model.logit_scale.exp() * image_embeddings @ text_embeddings.T


def wrong_axis(model, images, token_ids):
    image_embeddings = F.normalize(model.encode_image(images), dim=0)
    text_embeddings = F.normalize(model.encode_text(token_ids), dim=0)
    return image_embeddings, text_embeddings, model.logit_scale.exp() * image_embeddings @ text_embeddings.T


def transposed(model, images, token_ids):
    image_embeddings, text_embeddings, logits = reference_clip_logits(model, images, token_ids)
    return image_embeddings, text_embeddings, logits.T


def no_exp(model, images, token_ids):
    image_embeddings, text_embeddings, _ = reference_clip_logits(model, images, token_ids)
    return image_embeddings, text_embeddings, model.logit_scale * image_embeddings @ text_embeddings.T


def fixed_temperature(model, images, token_ids):
    image_embeddings, text_embeddings, _ = reference_clip_logits(model, images, token_ids)
    return image_embeddings, text_embeddings, (1 / 0.07) * image_embeddings @ text_embeddings.T


def crashes(model, images, token_ids):
    return model.encode_image(images[:, :1])


@pytest.mark.parametrize("wrong, words", [
    (unnormalised, "not L2-normalised"),
    (wrong_axis, "batch axis"),
    (transposed, "transposed"),
    (no_exp, "instead of exp(t)"),
    (fixed_temperature, "logits differ"),
    (crashes, "your code raised"),
])
def test_logits_check_names_the_mistake(wrong, words):
    result = check_clip_logits(wrong)
    assert result.status == "fail"
    assert words in result.message, result.message

