"""Checks for lesson 04's exercises: the projector, the splice with its labels, freezing for stage 1.

    check_projector(build_projector)            # your connector vs course_lib.connector's
    check_splice(splice_image)                  # your sequence, mask and labels vs the reference
    check_freeze_for_stage1(freeze_for_stage1)  # only the projector may receive gradients
"""

from __future__ import annotations

from typing import Callable

import open_clip
import torch
import torch.nn as nn

from course_lib.checks import (CheckFailure, CheckResult, expect_close, expect_equal, expect_shape, expect_true,
                               expect_type, run_check)
from course_lib.connector import IGNORE_INDEX, SplicedSequence, build_projector, projector_parameters, splice_image
from course_lib.llava import LlavaModel, patch_features
from course_lib.tiny_lm import TinyLM, TinyLMConfig, WordTokenizer

PROJECTOR_CASES = [("linear", 64, 32), ("mlp2x_gelu", 64, 32), ("linear", 16, 48), ("mlp2x_gelu", 1024, 4096 // 64)]


def check_projector(student_build_projector: Callable[[str, int, int], nn.Module]) -> CheckResult:
    """``build_projector(kind, vision_dim, lm_dim)``: shapes, parameter counts, layer order, bad kinds."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        for kind, vision_dim, lm_dim in PROJECTOR_CASES:
            what = f"build_projector({kind!r}, {vision_dim}, {lm_dim})"
            projector = student_build_projector(kind, vision_dim, lm_dim)
            expect_type(projector, nn.Module, what)
            features = torch.randn(2, 5, vision_dim, generator=generator)  # (B, N, Dv)
            out = projector(features)
            expect_shape(out, (2, 5, lm_dim), f"{what}(features of shape (2, 5, {vision_dim}))",
                         hint="each patch feature (Dv) becomes one LM input vector (D)")
            count = sum(p.numel() for p in projector.parameters())
            expected_count = projector_parameters(kind, vision_dim, lm_dim)
            linears = [m for m in projector.modules() if isinstance(m, nn.Linear)]
            expect_equal(count, expected_count, f"{what}: number of parameters", hint=(
                "one Linear(vision_dim, lm_dim) with bias" if kind == "linear" else
                "Linear(vision_dim, lm_dim) -> GELU -> Linear(lm_dim, lm_dim), both with biases"))
            if kind == "mlp2x_gelu":
                expect_true(any(isinstance(m, nn.GELU) for m in projector.modules()),
                            f"{what} has no GELU", hint="LLaVA-1.5's MLP is Linear -> GELU -> Linear")
                reference = build_projector(kind, vision_dim, lm_dim)
                with torch.no_grad():  # same weights in the reference, then the outputs must agree
                    for mine, theirs in zip(linears, [reference[0], reference[2]]):
                        theirs.weight.copy_(mine.weight)
                        theirs.bias.copy_(mine.bias)
                expect_close(out, reference(features), f"{what}'s output", atol=1e-5,
                             hint="apply the layers in the order Linear, GELU, Linear")
        try:
            student_build_projector("mlp3x_relu", 8, 8)
        except ValueError:
            pass
        else:
            raise CheckFailure("build_projector('mlp3x_relu', 8, 8) should raise ValueError: "
                               "only 'linear' and 'mlp2x_gelu' exist")
        return (f"shapes and parameter counts right for {len(PROJECTOR_CASES)} cases "
                f"(e.g. mlp2x_gelu 64 -> 32: {projector_parameters('mlp2x_gelu', 64, 32):,} parameters)")

    return run_check("projector", body)


def _splice_cases(generator: torch.Generator):
    """(prompt_ids, answer_ids, image_embeds, embedding, image_token_id): <image> early, first, last; long answer."""
    embedding = nn.Embedding(12, 6)
    image = 3
    prompts = [[1, 4, image, 5, 6, 7], [image, 8, 9], [1, 4, 5, image], [1, image, 10]]
    answers = [[9, 2], [10, 11, 9, 2], [2], [7, 8, 9, 10, 11, 2]]
    for prompt, answer, N in zip(prompts, answers, (4, 2, 3, 5)):
        yield (torch.tensor(prompt), torch.tensor(answer), torch.randn(N, 6, generator=generator), embedding, image)


def _as_triple(result, what: str):
    if isinstance(result, SplicedSequence):
        return result.embeds, result.attention_mask, result.labels
    if isinstance(result, (tuple, list)) and len(result) == 3:
        return tuple(result)
    raise CheckFailure(f"{what} should return SplicedSequence(embeds, attention_mask, labels), "
                       f"got {type(result).__name__}")


def check_splice(student_splice: Callable[..., SplicedSequence]) -> CheckResult:
    """``splice(prompt_ids, answer_ids, image_embeds, token_embedding, image_token_id)`` vs the reference."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        for prompt, answer, image_embeds, embedding, image_id in _splice_cases(generator):
            what = f"splice(prompt {prompt.tolist()}, answer {answer.tolist()}, {image_embeds.shape[0]} image tokens)"
            with torch.no_grad():
                result = student_splice(prompt, answer, image_embeds, embedding, image_id)
                embeds, mask, labels = _as_triple(result, what)
                expected = splice_image(prompt, answer, image_embeds, embedding, image_id)
            L = expected.embeds.shape[0]
            length_hint = (f"the <image> token is replaced, not kept: {len(prompt)} prompt tokens - 1 + "
                           f"{image_embeds.shape[0]} image tokens + {len(answer)} answer tokens = {L}")
            expect_shape(embeds, expected.embeds.shape, f"{what}: embeds", hint=length_hint)
            expect_close(embeds, expected.embeds, f"{what}: embeds", hint=(
                "text before <image>, then the N image tokens, then the rest of the prompt and the answer, "
                "all from token_embedding except the image tokens"))
            expect_shape(labels, (L,), f"{what}: labels", hint=length_hint)
            got_labels, expected_labels = labels.tolist(), expected.labels.tolist()
            if got_labels != expected_labels:
                position = int((prompt == image_id).nonzero()[0])
                N = image_embeds.shape[0]
                if any(label != IGNORE_INDEX for label in got_labels[position:position + N]):
                    hint = f"image positions carry no token to predict: label them {IGNORE_INDEX}"
                elif any(label != IGNORE_INDEX for label in got_labels[:L - len(answer)]):
                    hint = (f"the prompt is given, not learned: label its positions {IGNORE_INDEX}, "
                            "only the answer keeps its ids")
                else:
                    hint = "the answer's positions carry the answer's own ids (the loss shifts them by one)"
                raise CheckFailure(f"{what}: labels {got_labels}, expected {expected_labels}\n   Hint: {hint}")
            expect_shape(mask, (L,), f"{what}: attention_mask")
            expect_true(mask.tolist() == [1] * L, f"{what}: attention_mask is {mask.tolist()}, expected all ones",
                        hint="every position of one unpadded sequence is real (padding comes later, in pad_batch)")
        return "image tokens in place of <image>, labels -100 on image and prompt, answer ids learned"

    return run_check("splice", body)


def tiny_llava():
    """A small LlavaModel with a random tiny CLIP tower and a random TinyLM, for checks and tests."""
    torch.manual_seed(0)
    clip = open_clip.CLIP(32, dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
                          dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1))
    lm = TinyLM(TinyLMConfig(context_length=48, width=32, num_layers=2, num_heads=2))
    return LlavaModel(clip.visual, lm, WordTokenizer(), "mlp2x_gelu")


def check_freeze_for_stage1(student_freeze: Callable[[nn.Module], None]) -> CheckResult:
    """After ``freeze_for_stage1(model)`` and one backward pass, only the projector has gradients."""

    def body() -> str:
        model = tiny_llava()
        for parameter in model.parameters():  # start from "everything trainable", as a fresh nn.Module is
            parameter.requires_grad_(True)
        student_freeze(model)
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        chats = [model.encode([("what colour are the objects ?", colour)]) for colour in ("red", "blue")]
        frozen = [name for name, p in model.projector.named_parameters() if not p.requires_grad]
        expect_true(not frozen, f"projector parameters frozen: {['projector.' + name for name in frozen]}",
                    hint="stage 1 trains the projector: model.projector.requires_grad_(True)")
        with torch.enable_grad():
            features = patch_features(model.vision, images)  # through the tower, so it *could* get gradients
            model(features, [ids for ids, _ in chats], [labels for _, labels in chats]).backward()
        got = {name.split(".")[0]: [] for name, _ in model.named_parameters()}
        for name, parameter in model.named_parameters():
            if parameter.grad is not None and bool(parameter.grad.abs().sum() > 0):
                got[name.split(".")[0]].append(name)
        for part in ("vision", "lm"):
            expect_true(not got[part], f"{len(got[part])} parameters of model.{part} received gradients, e.g. "
                        f"{got[part][:3]}",
                        hint=f"in stage 1 model.{part} is frozen: model.{part}.requires_grad_(False)")
        projector = [name for name, _ in model.named_parameters() if name.startswith("projector.")]
        missing = sorted(set(projector) - set(got["projector"]))
        expect_true(not missing, f"projector parameters without gradients: {missing}",
                    hint="stage 1 trains the projector: model.projector.requires_grad_(True)")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return f"only the projector trains: {trainable:,} of {total:,} parameters get gradients"

    return run_check("freeze_for_stage1", body)
