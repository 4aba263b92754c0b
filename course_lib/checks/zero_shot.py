"""Checks for lesson 03 (zero-shot): the ensemble classifier, zero-shot accuracy, multiple choice."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import CheckFailure, CheckResult, expect_close, expect_equal, expect_shape, run_check
from course_lib.shapes_data import make_scene, render_scene
from course_lib.zero_shot import (MultipleChoiceQuestion, Tokenizer, accuracy, build_zero_shot_classifier,
                                  choice_logits, encode_choices, encode_images, fill_templates,
                                  make_questions)

# (class names, templates): one prompt, then an ensemble of three.
CLASSIFIER_CASES = [
    (["red circle", "blue square", "green cross"], ["one large {} on the left"]),
    (["yellow triangle", "purple circle", "orange square", "red cross"],
     ["one small {} on the left", "one large {} at the top", "one small {} on the right"]),
]


def _classifier_mistakes(model: nn.Module, tokenizer: Tokenizer, names: list[str],
                         templates: list[str]) -> dict[str, torch.Tensor]:
    """What common slips of the prompt ensemble produce, to recognise them in a wrong answer."""
    K, T = len(names), len(templates)
    with torch.no_grad():
        raw = model.encode_text(tokenizer(fill_templates(names, templates)))  # (K * T, D), not normalised
    raw = raw.reshape(K, T, -1)  # (K, T, D)
    unit = F.normalize(raw, dim=-1)
    return {
        "each text embedding must be normalised before averaging (F.normalize(..., dim=-1)), "
        "so that every prompt gets the same vote": F.normalize(raw.mean(1), dim=-1).T,
        "renormalise the class average: the mean of unit vectors is shorter than 1": unit.mean(1).T,
        "nothing is normalised: normalise each text embedding, average, then normalise again": raw.mean(1).T,
    }


def check_build_classifier(student_build: Callable[..., torch.Tensor], model: nn.Module,
                           tokenizer: Tokenizer) -> CheckResult:
    """``build(model, tokenizer, class_names, templates)`` must give the (D, K) prompt-ensemble weights."""

    def body() -> str:
        for names, templates in CLASSIFIER_CASES:
            expected = build_zero_shot_classifier(model, tokenizer, names, templates)  # (D, K)
            D, K = expected.shape
            got = student_build(model, tokenizer, names, templates)
            what = f"your classifier for {K} classes x {len(templates)} template(s)"
            if isinstance(got, torch.Tensor) and tuple(got.shape) == (K, D) and K != D:
                raise CheckFailure(f"{what} has shape {(K, D)} = (K, D); return (D, K), one column per "
                                   "class, so that image_features @ W gives (B, K)\n   Hint: transpose with .T")
            expect_shape(got, (D, K), what, hint="(D, K): embedding width by number of classes")
            if not torch.allclose(got, expected, atol=1e-5):
                for hint, wrong in _classifier_mistakes(model, tokenizer, names, templates).items():
                    if torch.allclose(got, wrong, atol=1e-5):
                        raise CheckFailure(f"{what} differs from the reference.\n   Hint: {hint}")
            expect_close(got, expected, what, hint="per class: encode its filled templates, normalise each, "
                                                   "average, normalise again; columns in class order")
        return "normalise, average per class, renormalise: equal to the reference for 1 and 3 templates"

    return run_check("build_classifier", body)


def check_zero_shot_accuracy(student_accuracy: Callable[..., float]) -> CheckResult:
    """``zero_shot_accuracy(image_features (B, D), classifier (D, K), labels (B,))`` -> top-1 fraction."""

    def body() -> str:
        generator = torch.Generator().manual_seed(0)
        for B, D, K in [(50, 16, 5), (7, 8, 12), (30, 32, 3)]:
            image_features = F.normalize(torch.randn(B, D, generator=generator), dim=-1)
            classifier = F.normalize(torch.randn(D, K, generator=generator), dim=0)
            labels = torch.randint(0, K, (B,), generator=generator)
            labels[: B // 2] = (image_features @ classifier).argmax(1)[: B // 2]  # half right at least
            expected = accuracy(image_features @ classifier, labels)
            got = student_accuracy(image_features, classifier, labels)
            what = f"zero_shot_accuracy for B={B} images, D={D}, K={K} classes"
            if isinstance(got, torch.Tensor):
                expect_equal(got.numel(), 1, f"number of values {what} returned", hint="return one number")
                got = got.item()
            if not isinstance(got, (int, float)):
                raise CheckFailure(f"{what} returned a {type(got).__name__}; return a float in [0, 1]")
            if abs(got - 100 * expected) < 1e-3 and expected > 0:
                raise CheckFailure(f"{what} is {got:.4g}, a percentage; return the fraction {expected:.4g} in [0, 1]")
            if abs(got - expected * B) < 1e-3 and B > 1 and expected > 0:
                raise CheckFailure(f"{what} is {got:.4g}, the number of correct images; divide by B={B}")
            if abs(got - expected) > 1e-6:
                raise CheckFailure(f"{what}: expected {expected:.4f}, got {got:.4f}\n   Hint: the prediction is "
                                   "the class with the largest image_features @ classifier in each row (argmax "
                                   "over dim=1); compare it with labels and average")
        return "top-1 accuracy as a fraction, on 3 random problems"

    return run_check("zero_shot_accuracy", body)


def _check_questions(model: nn.Module, tokenizer: Tokenizer) -> tuple[torch.Tensor, list[MultipleChoiceQuestion]]:
    """Nine scenes with different attributes, their image features and one question about each."""
    settings = [("red", "circle", "small", 2, "left"), ("blue", "square", "large", 1, "top"),
                ("green", "triangle", "small", 3, "bottom"), ("purple", "cross", "large", 2, "right"),
                ("orange", "circle", "large", 1, "left"), ("yellow", "square", "small", 3, "top"),
                ("red", "triangle", "large", 3, "right"), ("green", "cross", "small", 1, "bottom"),
                ("blue", "circle", "small", 2, "top")]
    scenes = [make_scene(*setting, seed=index) for index, setting in enumerate(settings)]
    image_size = getattr(getattr(model, "visual", None), "image_size", 32)
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    images = torch.stack([render_scene(scene, image_size) for scene in scenes])  # (B, 3, H, W)
    return encode_images(model, images), make_questions(scenes, seed=0)


def check_answer_multiple_choice(student_answer: Callable[..., Sequence[int]], model: nn.Module,
                                 tokenizer: Tokenizer) -> CheckResult:
    """``answer(model, tokenizer, image_features, questions)`` -> the chosen index for each question."""

    def body() -> str:
        image_features, questions = _check_questions(model, tokenizer)
        choice_features, choice_mask = encode_choices(model, tokenizer, questions)
        reference = choice_logits(image_features, choice_features, choice_mask).argmax(1)  # (B,)
        got = student_answer(model, tokenizer, image_features, questions)
        got = torch.as_tensor(got).flatten().long().cpu()
        what = f"your answers to {len(questions)} questions"
        expect_equal(len(got), len(questions), f"number of {what}", hint="one chosen index per question")
        if not torch.equal(got, reference):
            worst = choice_logits(-image_features, choice_features, choice_mask).argmax(1)
            if torch.equal(got, worst):
                raise CheckFailure(f"{what} pick the least similar text.\n   Hint: take the argmax, not the argmin")
            first = int((got != reference).nonzero()[0])
            q = questions[first]
            raise CheckFailure(f"{what}: question {first} ({q.question!r}, choices {list(q.choices)}): expected "
                               f"choice {int(reference[first])}, got {int(got[first])}\n   Hint: encode each of the "
                               "question's texts (q.texts) with encode_texts (normalised), compare with that "
                               "image's features (dot product) and take the index of the largest")
        return f"same choices as the reference on {len(questions)} questions about colour, shape and count"

    return run_check("answer_multiple_choice", body)
