"""Checks for lesson 02 (tiny CLIP): the symmetric contrastive loss, the normalised embeddings and logits."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from course_lib.checks import CheckFailure, CheckResult, expect_close, expect_shape, expect_type, run_check
from course_lib.tiny_clip import TinyClipConfig, build_tiny_clip, contrastive_loss, get_tokenizer, tokenize

# (batch size, width, logit_scale): a pair, a small batch at CLIP's initial and maximal scale, a larger one.
LOSS_CASES = [(2, 4, 1.0), (5, 8, 1 / 0.07), (5, 8, 100.0), (16, 32, 30.0)]


def _known_loss_mistakes(images: torch.Tensor, texts: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    """What common wrong versions of the loss return, each with the hint that explains it."""
    labels = torch.arange(images.shape[0])
    logits = images @ texts.T * scale  # (B, B)
    per_image, per_text = F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
    unscaled = images @ texts.T
    return {
        "only images choose their caption (rows); add the other direction, captions choosing their image "
        "(the columns, logits.T), and average the two": per_image,
        "only captions choose their image (columns); add the other direction (the rows) and average the two": per_text,
        "the two directions are added but not averaged: divide by 2": per_image + per_text,
        "the similarities are not multiplied by logit_scale": (F.cross_entropy(unscaled, labels)
                                                               + F.cross_entropy(unscaled.T, labels)) / 2,
        "logit_scale is already exp(t): multiply by it, don't exponentiate it again":
            (F.cross_entropy(logits / scale * math.exp(scale), labels)
             + F.cross_entropy(logits.T / scale * math.exp(scale), labels)) / 2 if scale < 50 else None,
    }


def check_contrastive_loss(student_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Compare ``student_loss(image_features, text_features, logit_scale)`` with the reference."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        for B, D, scale in LOSS_CASES:
            images = F.normalize(torch.randn(B, D, generator=generator), dim=-1).requires_grad_()
            texts = F.normalize(torch.randn(B, D, generator=generator), dim=-1).requires_grad_()
            got = student_loss(images, texts, torch.tensor(scale))
            what = f"your loss on a batch of {B} pairs with logit_scale={scale:.4g}"
            expect_type(got, torch.Tensor, what, hint="return the loss as a torch tensor, not a float")
            expect_shape(got, (), what, hint="average over the batch: F.cross_entropy does it by default")
            if not got.requires_grad:
                raise CheckFailure(f"{what} carries no gradient.\n   Hint: stay in torch "
                                   "(no .item(), .numpy() or torch.no_grad()), so that training can backpropagate")
            expected = contrastive_loss(images, texts, scale)
            if not torch.isclose(got.detach(), expected.detach(), atol=1e-5):
                for hint, value in _known_loss_mistakes(images.detach(), texts.detach(), scale).items():
                    if value is not None and torch.isclose(got.detach(), value, atol=1e-5):
                        raise CheckFailure(f"{what} is {got.item():.5f}, expected {expected.item():.5f}.\n   Hint: {hint}")
            expect_close(got, expected, what, hint="labels = torch.arange(n); loss = (CE(logits, labels) "
                         "+ CE(logits.T, labels)) / 2 with logits = logit_scale * I_e @ T_e.T")
        return f"matches open_clip.ClipLoss on {len(LOSS_CASES)} batches (sizes 2 to 16, scales 1 to 100)"

    return run_check("contrastive_loss", body)


# A model and batch small enough to check in a blink.
_CHECK_CONFIG = TinyClipConfig(vision_width=32, vision_layers=1, text_width=32, text_heads=1, text_layers=1,
                               embed_dim=16)
_CAPTIONS = ["one small red circle on the left", "two large blue squares at the top",
             "three small green crosses on the right"]


def check_clip_logits(student_clip_logits: Callable) -> CheckResult:
    """Compare ``student_clip_logits(model, images, token_ids) -> (I_e, T_e, logits)`` with the model's own."""

    def body() -> str:
        model = build_tiny_clip(_CHECK_CONFIG).eval()
        with torch.no_grad():
            model.logit_scale.fill_(math.log(20.0))  # not the initial value, so a hard-coded 1/0.07 shows
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(3, 3, 32, 32, generator=generator)  # (B, 3, H, W)
        token_ids = tokenize(get_tokenizer(_CHECK_CONFIG), _CAPTIONS)  # (B, L)
        with torch.no_grad():
            result = student_clip_logits(model, images, token_ids)
            image_embeddings, text_embeddings, scale = model(images, token_ids)  # open_clip normalises both
        if not isinstance(result, tuple) or len(result) != 3:
            raise CheckFailure("return three tensors: (image_embeddings, text_embeddings, logits)")
        got_images, got_texts, got_logits = result
        raw_images = model.encode_image(images)  # (B, D), not normalised
        for got, expected, raw, name in ((got_images, image_embeddings, raw_images, "image_embeddings"),
                                         (got_texts, text_embeddings, model.encode_text(token_ids), "text_embeddings")):
            expect_shape(got, expected.shape, name, hint="one row of width embed_dim per image or caption")
            if torch.allclose(got, raw, atol=1e-5):
                raise CheckFailure(f"{name} are not L2-normalised.\n   Hint: F.normalize(features, dim=-1) "
                                   "(each row divided by its length)")
            if torch.allclose(got, F.normalize(raw, dim=0), atol=1e-5):
                raise CheckFailure(f"{name} are normalised along the batch axis.\n   Hint: normalise each row: dim=-1")
            expect_close(got, expected, name, hint="use model.encode_image / model.encode_text, then F.normalize")
        expected_logits = scale * image_embeddings @ text_embeddings.T  # (B, B)
        expect_shape(got_logits, expected_logits.shape, "logits", hint="(B images, B captions)")
        if torch.allclose(got_logits, expected_logits.T, atol=1e-4) and not torch.allclose(got_logits, expected_logits, atol=1e-4):
            raise CheckFailure("logits are transposed.\n   Hint: row i is image i: I_e @ T_e.T")
        if torch.allclose(got_logits, image_embeddings @ text_embeddings.T, atol=1e-4):
            raise CheckFailure("logits are plain cosine similarities.\n   Hint: multiply by model.logit_scale.exp()")
        if torch.allclose(got_logits, model.logit_scale * image_embeddings @ text_embeddings.T, atol=1e-4):
            raise CheckFailure("logits use t instead of exp(t).\n   Hint: model.logit_scale is t; multiply by its exp()")
        expect_close(got_logits, expected_logits, "logits", atol=1e-4,
                     hint="logits = model.logit_scale.exp() * image_embeddings @ text_embeddings.T")
        return "unit-length embeddings and scaled cosine similarities, as open_clip's CLIP.forward computes them"

    return run_check("clip_logits", body)
