"""Zero-shot classification with CLIP: a classifier made from label text, prompt ensembles, and
image + text classification (multiple-choice questions).

CLIP (Radford et al., 2021, *Learning Transferable Visual Models From Natural Language
Supervision*) needs no labelled images to classify. The lecture's second CLIP slide:

    2. Create dataset classifier from label text:  every class name goes into a prompt template
       ("a photo of a {}.") and through the text encoder; the K normalised text embeddings are
       the columns of a linear classifier W of shape (D, K).
    3. Use for zero-shot prediction:  p(class | image) = softmax(s · f(image) @ W), with f(image)
       the normalised image embedding and s the logit scale (100 at evaluation, as in open_clip).

A **prompt ensemble** (Section 3.1.4 of the paper) fills several templates per class, encodes each,
normalises, averages per class and normalises again: one embedding per class, less dependent on how
one prompt happens to be worded. ``open_clip.zero_shot_classifier.build_zero_shot_classifier`` does
exactly this; the tests check that :func:`build_zero_shot_classifier` agrees with it.

The lecture's *Multimodal Classification* slides ask multiple-choice questions about an image. CLIP
answers one by turning each (question, candidate answer) pair into a text, scoring every text
against the image and picking the best (:func:`choice_logits`). A small supervised baseline
(:class:`FusionClassifier`) instead concatenates the frozen image and text features and trains a
small classifier on a few labelled questions. A **linear probe** (:func:`train_linear_probe`) is
the supervised counterpart of the zero-shot classifier: the same (D, K) shape, learned from k
labelled images per class instead of read off the class names.

Shapes: B images, D embedding width, K classes, T prompt templates (here T counts templates, not
time steps); a question has ``num_choices`` candidate answers.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.shapes_data import (COLOURS, COUNT_WORDS, COUNTS, PLURALS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES,
                                   Scene, caption)

Template = Union[str, Callable[[str], str]]  # "a photo of a {}." or lambda name: f"a photo of a {name}."
Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> (B, L) token ids
EVAL_LOGIT_SCALE = 100.0  # the fixed scale open_clip uses for zero-shot evaluation


# ----------------------------------------------------------------------------- checking the input

def _check_class_names(class_names: Sequence[str]) -> None:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of strings, got {type(class_names).__name__} "
                        f"{class_names!r}; wrap a single name in a list: [{class_names!r}]")
    if len(class_names) == 0:
        raise ValueError("class_names is empty; pass at least one class name, e.g. ['red circle', 'blue square']")
    duplicates = sorted(name for name, n in Counter(class_names).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate class names {duplicates}: two classes with the same text get the same "
                         "classifier column and can never be told apart; keep each name once")


def _check_templates(templates: Sequence[Template]) -> None:
    if isinstance(templates, str) or not isinstance(templates, Sequence):
        raise TypeError(f"templates must be a list of templates, got {type(templates).__name__} {templates!r}; "
                        f"for a single prompt pass [{templates!r}]")
    if len(templates) == 0:
        raise ValueError("templates is empty; pass at least one, e.g. ['a photo of a {}.']")
    for template in templates:
        if isinstance(template, str):
            if "{}" not in template:
                raise ValueError(f"template {template!r} has no '{{}}' placeholder for the class name; "
                                 f"write it like {template.rstrip('.') + ' {}'!r}")
        elif not callable(template):
            raise TypeError(f"a template must be a string with '{{}}' or a function of the class name, "
                            f"got {type(template).__name__} {template!r}")


def _check_features(image_features: torch.Tensor, width: int, what: str) -> None:
    if not isinstance(image_features, torch.Tensor):
        raise TypeError(f"image_features must be a torch.Tensor of shape (B, D), got {type(image_features).__name__}")
    if image_features.dim() != 2 or image_features.shape[1] != width:
        raise ValueError(f"image_features have shape {tuple(image_features.shape)}, but {what} expects (B, {width}); "
                         "encode the images with the same model that made it (encode_images(model, images))")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- class names and prompts

CLIP_TEMPLATE = "a photo of a {}."  # CLIP's default single prompt (its ImageNet evaluation)


def class_names_of(combinations: Sequence[tuple[str, str]]) -> list[str]:
    """Class names for (colour, shape) pairs, said as captions say them: ``("red", "circle") -> "red circle"``."""
    return [f"{colour} {shape}" for colour, shape in combinations]


@dataclass(frozen=True)
class CaptionTemplate:
    """A prompt written the way the training captions are, a function of the class name.

    Example:
        >>> CaptionTemplate(2, "small", "left")("red cross")
        'two small red crosses on the left'
    """

    count: int  # one of shapes_data.COUNTS
    size: str  # "small" or "large"
    position: str  # "left", "right", "top" or "bottom"

    def __call__(self, class_name: str) -> str:
        if self.count > 1:  # "red cross" -> "red crosses"
            words, noun = class_name.rsplit(" ", 1) if " " in class_name else ("", class_name)
            class_name = f"{words} {PLURALS.get(noun, noun + 's')}".strip()
        return f"{COUNT_WORDS[self.count]} {self.size} {class_name} {POSITION_PHRASES[self.position]}"

    def __repr__(self) -> str:
        return repr(self("{}"))


# Every way a caption can frame a (colour, shape) pair: 3 counts x 2 sizes x 4 positions.
CAPTION_TEMPLATES: tuple[CaptionTemplate, ...] = tuple(
    CaptionTemplate(count, size, position) for count in COUNTS for size in SIZES for position in POSITIONS)


# ----------------------------------------------------------------------------- encoding

def fill_templates(class_names: Sequence[str], templates: Sequence[Template]) -> list[str]:
    """Every template filled with every class name, class by class: K * num_templates texts.

    Example:
        >>> fill_templates(["cat", "dog"], ["a {}", "a photo of a {}"])
        ['a cat', 'a photo of a cat', 'a dog', 'a photo of a dog']
    """
    _check_class_names(class_names)
    _check_templates(templates)
    return [template.format(name) if isinstance(template, str) else template(name)
            for name in class_names for template in templates]


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """L2-normalised text embeddings ``(len(texts), D)``, on the model's device."""
    device = _device(model)
    chunks = [model.encode_text(tokenizer(list(texts[start:start + batch_size])).to(device))  # (chunk, D)
              for start in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


@torch.no_grad()
def encode_images(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised image embeddings ``(B, D)`` of images ``(B, 3, H, W)``."""
    images = images.to(_device(model))
    chunks = [model.encode_image(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


# ----------------------------------------------------------------------------- the zero-shot classifier

def encode_class_templates(model: nn.Module, tokenizer: Tokenizer, class_names: Sequence[str],
                           templates: Sequence[Template]) -> torch.Tensor:
    """The normalised text embedding of every (class, template) pair, ``(K, T, D)``."""
    texts = fill_templates(class_names, templates)  # checks the input; K * T texts, class by class
    K, T = len(class_names), len(templates)
    return encode_texts(model, tokenizer, texts).reshape(K, T, -1)  # (K * T, D) -> (K, T, D)


def build_zero_shot_classifier(model: nn.Module, tokenizer: Tokenizer, class_names: Sequence[str],
                               templates: Sequence[Template]) -> torch.Tensor:
    """A linear classifier read off the class names: CLIP's prompt ensemble.

    For class k with texts t_k1 ... t_kT (every template filled with its name):

        w_k = normalise( (1/T) Σ_j normalise(text_encoder(t_kj)) ),      W = [w_1 ... w_K]

    Args:
        model: a CLIP with ``encode_text`` (open_clip's, or tiny CLIP).
        tokenizer: turns a list of texts into ``(B, L)`` token ids.
        class_names: the K labels, e.g. ``["red circle", "blue square"]``; distinct, not empty.
        templates: strings with a ``{}`` for the class name, or functions of the name; one template
            is a single prompt, several an ensemble.

    Returns:
        ``W`` of shape ``(D, K)``, unit-norm columns; ``image_features @ W`` gives cosine similarities.

    Example:
        >>> W = build_zero_shot_classifier(model, tokenizer, ["red circle", "blue square"], ["a photo of a {}."])
        >>> W.shape
        torch.Size([64, 2])
    """
    per_template = encode_class_templates(model, tokenizer, class_names, templates)  # (K, T, D), unit norm
    class_embeddings = F.normalize(per_template.mean(dim=1), dim=-1)  # (K, D): average, then renormalise
    return class_embeddings.T  # (D, K)


def max_over_templates_logits(image_features: torch.Tensor, class_template_features: torch.Tensor,
                              logit_scale: float = EVAL_LOGIT_SCALE) -> torch.Tensor:
    """Another way to ensemble: score each class by its *best-matching* template, ``(B, K)``.

        logit_k = s · max_j f(image) · normalise(text_encoder(t_kj))

    Averaging (:func:`build_zero_shot_classifier`) suits templates that say the same thing in
    different words; when templates describe different pictures (one circle or three, left or
    right), an image matches one of them, and the average blurs them together.

    Args:
        image_features: ``(B, D)`` normalised image embeddings.
        class_template_features: ``(K, T, D)`` from :func:`encode_class_templates`.
    """
    _check_features(image_features, class_template_features.shape[-1],
                    f"class_template_features of shape {tuple(class_template_features.shape)} = (K, T, D)")
    similarity = torch.einsum("bd,ktd->bkt", image_features, class_template_features)  # (B, K, T)
    return logit_scale * similarity.max(dim=-1).values  # (B, K)


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor,
                     logit_scale: float = EVAL_LOGIT_SCALE) -> torch.Tensor:
    """``logit_scale · image_features @ classifier``: ``(B, D) @ (D, K) -> (B, K)``."""
    _check_features(image_features, classifier.shape[0], f"the classifier of shape {tuple(classifier.shape)} = (D, K)")
    return logit_scale * image_features @ classifier  # (B, K)


def zero_shot_probabilities(image_features: torch.Tensor, classifier: torch.Tensor,
                            logit_scale: float = EVAL_LOGIT_SCALE) -> torch.Tensor:
    """p(class | image) = softmax(s · f(image) @ W), ``(B, K)``, each row summing to 1.

    Args:
        image_features: ``(B, D)`` L2-normalised image embeddings (:func:`encode_images`).
        classifier: ``(D, K)`` from :func:`build_zero_shot_classifier` (or a probe's weights, transposed).
        logit_scale: s, the inverse temperature; 100 is open_clip's fixed evaluation value. It changes
            how confident the probabilities look, never which class wins.
    """
    return zero_shot_logits(image_features, classifier, logit_scale).softmax(dim=-1)


def top_k(probabilities: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable classes of each row, best first: ``(values (B, k), indices (B, k))``."""
    num_classes = probabilities.shape[-1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"k={k} but there are {num_classes} classes; choose k between 1 and {num_classes}")
    return probabilities.topk(k, dim=-1)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy, a fraction in [0, 1]: how often the true label is among the k best scores.

    ``scores`` are ``(B, K)`` logits or probabilities, ``labels`` ``(B,)`` class indices.
    """
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{scores.shape[0]} rows of scores but {labels.shape[0]} labels; pass one label per image")
    _, best = top_k(scores, k)  # (B, k)
    return (best == labels[:, None]).any(dim=1).float().mean().item()


# ----------------------------------------------------------------------------- the few-shot linear probe

def few_shot_indices(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of k examples of every class present in ``labels`` (chosen at random, seeded)."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten().numpy()
        if len(members) < k:
            raise ValueError(f"class {label} has only {len(members)} examples, fewer than k={k}; "
                             "generate more images or lower k")
        picked.extend(rng.choice(members, size=k, replace=False).tolist())
    return torch.tensor(sorted(picked))


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                       weight_decay: float = 1e-4, max_iter: int = 100) -> nn.Linear:
    """Logistic regression on frozen image features, as CLIP's linear-probe evaluation.

    Minimises cross-entropy + weight_decay · ||W||² over the whole (small) training set with L-BFGS,
    starting from zero weights, so the result depends on the data alone.

    Args:
        features: ``(B, D)`` image features of the labelled examples.
        labels: ``(B,)`` their classes in ``[0, num_classes)``.
        num_classes: K.
        weight_decay: the L2 penalty; with one example per class the data are separable and the
            weights would grow without bound without it.
        max_iter: L-BFGS iterations.

    Returns:
        An ``nn.Linear(D, K)``; ``probe(features)`` gives ``(B, K)`` logits.
    """
    B, D = features.shape
    probe = nn.Linear(D, num_classes).to(features.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss_closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features), labels) + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(loss_closure)
    return probe.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- multiple-choice questions

@dataclass(frozen=True)
class MultipleChoiceQuestion:
    """A question about one image, with candidate answers and the texts CLIP scores."""

    question: str  # what is asked: "What colour are the two small circles on the left?"
    choices: tuple[str, ...]  # the candidate answers: ("red", "blue", "green", "yellow")
    answer: int  # index of the correct choice
    texts: tuple[str, ...]  # each (question, choice) said as a caption: "two small red circles on the left"
    kind: str  # what it asks about: "colour", "shape" or "count"


QUESTION_KINDS = ("colour", "shape", "count")


def ask(scene: Scene, kind: str, rng: np.random.Generator, num_choices: int = 4) -> MultipleChoiceQuestion:
    """A question of ``kind`` about ``scene``: the true value and up to ``num_choices - 1`` wrong ones.

    A caption-trained CLIP cannot read a question, so each candidate answer is put back into the
    scene's description ("two small {answer} circles on the left"): the question and the answer
    said together as the caption they assert.

    Example:
        >>> scene = make_scene("red", "circle", "small", 2, "left")
        >>> question = ask(scene, "count", np.random.default_rng(0))
        >>> question.question, question.choices, question.answer
        ('How many small red circles are on the left?', ('3', '2', '1'), 1)
        >>> question.texts[2]
        'one small red circle on the left'
    """
    options = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(COUNTS)}
    if kind not in options:
        raise ValueError(f"unknown question kind {kind!r}; choose one of {', '.join(QUESTION_KINDS)}")
    truth = getattr(scene, kind)
    wrong = [value for value in options[kind] if value != truth]
    wrong = [wrong[i] for i in rng.permutation(len(wrong))[: num_choices - 1]]
    values = [truth] + wrong
    values = [values[i] for i in rng.permutation(len(values))]  # the answer at a random place
    question = _question_text(scene, kind)
    texts = [caption(dataclasses.replace(scene, **{kind: value})) for value in values]
    return MultipleChoiceQuestion(question, tuple(str(v) for v in values), values.index(truth), tuple(texts), kind)


def _question_text(scene: Scene, kind: str) -> str:
    """The question in words, naming every attribute of the scene except the one asked about."""
    verb, the = ("is", "the") if scene.count == 1 else ("are", f"the {COUNT_WORDS[scene.count]}")
    noun = scene.shape if scene.count == 1 else PLURALS[scene.shape]
    where = POSITION_PHRASES[scene.position]
    if kind == "colour":
        return f"What colour {verb} {the} {scene.size} {noun} {where}?"
    if kind == "shape":
        return f"What shape {verb} {the} {scene.size} {scene.colour} object{'s' * (scene.count > 1)} {where}?"
    return f"How many {scene.size} {scene.colour} {PLURALS[scene.shape]} are {where}?"


def make_questions(scenes: Sequence[Scene], seed: int = 0) -> list[MultipleChoiceQuestion]:
    """One question per scene, asking about colour, shape and count in turn (seeded)."""
    rng = np.random.default_rng(seed)
    return [ask(scene, QUESTION_KINDS[index % 3], rng) for index, scene in enumerate(scenes)]


def encode_choices(model: nn.Module, tokenizer: Tokenizer,
                   questions: Sequence[MultipleChoiceQuestion]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text features of every question's candidate texts, padded to the longest list of choices.

    Returns:
        ``choice_features (B, num_choices, D)`` unit norm (zeros where padded) and
        ``choice_mask (B, num_choices)``, True for a real choice.
    """
    num_choices = max(len(q.texts) for q in questions)
    features = encode_texts(model, tokenizer, [text for q in questions for text in q.texts])  # (total, D)
    choice_features = features.new_zeros(len(questions), num_choices, features.shape[1])  # (B, num_choices, D)
    choice_mask = torch.zeros(len(questions), num_choices, dtype=torch.bool, device=features.device)
    start = 0
    for row, q in enumerate(questions):
        choice_features[row, : len(q.texts)] = features[start: start + len(q.texts)]
        choice_mask[row, : len(q.texts)] = True
        start += len(q.texts)
    return choice_features, choice_mask


def choice_logits(image_features: torch.Tensor, choice_features: torch.Tensor, choice_mask: torch.Tensor,
                  logit_scale: float = EVAL_LOGIT_SCALE) -> torch.Tensor:
    """Zero-shot multiple choice: s · cos(image, text of each choice), ``(B, num_choices)``; padding -inf."""
    _check_features(image_features, choice_features.shape[-1],
                    f"choice_features of shape {tuple(choice_features.shape)} = (B, num_choices, D)")
    logits = logit_scale * torch.einsum("bd,bcd->bc", image_features, choice_features)  # (B, num_choices)
    return logits.masked_fill(~choice_mask, float("-inf"))


def answers(questions: Sequence[MultipleChoiceQuestion]) -> torch.Tensor:
    """The index of each question's correct choice, ``(B,)``."""
    return torch.tensor([q.answer for q in questions])


class FusionClassifier(nn.Module):
    """A small baseline for image + text classification on frozen CLIP features.

    score(image, text) = MLP([f_image; f_text; f_image ⊙ f_text]): the two embeddings concatenated,
    with their elementwise product, which lets a small network see where they agree. A question's
    choices are scored one by one and compared with a softmax.
    """

    def __init__(self, *, embed_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, image_features: torch.Tensor, choice_features: torch.Tensor,
                choice_mask: torch.Tensor) -> torch.Tensor:
        """``(B, D)``, ``(B, num_choices, D)``, ``(B, num_choices)`` -> logits ``(B, num_choices)``."""
        images = image_features[:, None, :].expand_as(choice_features)  # (B, num_choices, D)
        fused = torch.cat([images, choice_features, images * choice_features], dim=-1)  # (B, num_choices, 3D)
        return self.mlp(fused).squeeze(-1).masked_fill(~choice_mask, float("-inf"))  # (B, num_choices)


def train_fusion_classifier(image_features: torch.Tensor, choice_features: torch.Tensor, choice_mask: torch.Tensor,
                            labels: torch.Tensor, *, hidden_dim: int = 64, steps: int = 300, lr: float = 3e-3,
                            weight_decay: float = 1e-2, seed: int = 0) -> FusionClassifier:
    """Train a :class:`FusionClassifier` on a few labelled questions (full batch, AdamW, seeded).

    ``labels`` ``(B,)`` are the indices of the correct choices; the loss is cross-entropy over each
    question's choices.
    """
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the caller's RNG
        torch.manual_seed(seed)
        classifier = FusionClassifier(embed_dim=image_features.shape[1], hidden_dim=hidden_dim)
    classifier = classifier.to(image_features.device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(classifier(image_features, choice_features, choice_mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval().requires_grad_(False)
