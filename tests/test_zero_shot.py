"""Tests for course_lib.zero_shot: shapes, agreement with open_clip's builder, invariants, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier as open_clip_builder
from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

from course_lib.shapes_data import caption, make_dataset, make_scene
from course_lib.zero_shot import (CAPTION_TEMPLATES, CaptionTemplate, FusionClassifier, accuracy, answers, ask,
                                  build_zero_shot_classifier, choice_logits, class_names_of, encode_choices,
                                  encode_class_templates, encode_images, encode_texts, few_shot_indices,
                                  fill_templates, make_questions, max_over_templates_logits, top_k,
                                  train_fusion_classifier, train_linear_probe, zero_shot_logits,
                                  zero_shot_probabilities)

NAMES = ["red circle", "blue square", "green cross", "yellow triangle", "purple circle"]
TEMPLATES = ["one large {} on the left", "two small {} at the top", "a {}"]


@pytest.fixture(scope="module")
def image_features(model):
    return encode_images(model, make_dataset(6, "all", seed=1).images)  # (6, 32)


# ----------------------------------------------------------------------------- shapes

def test_classifier_shape_and_unit_columns(model, tokenizer):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    assert W.shape == (32, len(NAMES))
    assert torch.allclose(W.norm(dim=0), torch.ones(len(NAMES)), atol=1e-6)


def test_fill_templates_goes_class_by_class():
    assert fill_templates(["cat", "dog"], ["a {}", lambda name: f"my {name}"]) == ["a cat", "my cat", "a dog", "my dog"]


def test_caption_templates_read_like_captions():
    assert len(CAPTION_TEMPLATES) == 24 and len(set(CAPTION_TEMPLATES)) == 24
    assert CaptionTemplate(1, "large", "top")("purple triangle") == "one large purple triangle at the top"
    assert CaptionTemplate(3, "small", "bottom")("red cross") == "three small red crosses at the bottom"
    scene = make_scene("green", "square", "small", 2, "right")
    assert CaptionTemplate(2, "small", "right")(class_names_of([scene.combination])[0]) == caption(scene)


def test_class_template_features_shape(model, tokenizer):
    features = encode_class_templates(model, tokenizer, NAMES, TEMPLATES)
    assert features.shape == (len(NAMES), len(TEMPLATES), 32)
    assert torch.allclose(features.norm(dim=-1), torch.ones(len(NAMES), len(TEMPLATES)), atol=1e-6)


def test_probabilities_and_top_k_shapes(model, tokenizer, image_features):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    probabilities = zero_shot_probabilities(image_features, W)
    assert probabilities.shape == (6, len(NAMES))
    values, indices = top_k(probabilities, 3)
    assert values.shape == indices.shape == (6, 3)
    assert (values[:, :-1] >= values[:, 1:]).all()  # best first
    assert torch.equal(indices[:, 0], probabilities.argmax(1))


# ----------------------------------------------------------------------------- agreement with open_clip

@pytest.mark.parametrize("templates", [TEMPLATES, TEMPLATES[:1], list(SIMPLE_IMAGENET_TEMPLATES)],
                         ids=["three strings", "single prompt", "open_clip callables"])
def test_equal_to_open_clip_builder(model, tokenizer, templates):
    ours = build_zero_shot_classifier(model, tokenizer, NAMES, templates)
    theirs = open_clip_builder(model, tokenizer, NAMES, templates, num_classes_per_batch=2)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_single_prompt_is_the_normalised_text_embedding(model, tokenizer):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, ["one large {} on the left"])
    texts = [f"one large {name} on the left" for name in NAMES]
    assert torch.allclose(W, encode_texts(model, tokenizer, texts).T, atol=1e-6)


def test_logits_are_scaled_cosine_similarities(model, tokenizer, image_features):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    assert torch.allclose(zero_shot_logits(image_features, W), 100 * image_features @ W)
    assert torch.allclose(image_features.norm(dim=1), torch.ones(6), atol=1e-6)


# ----------------------------------------------------------------------------- invariants

def test_probabilities_sum_to_one(model, tokenizer, image_features):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    for scale in (1.0, 14.3, 100.0):
        probabilities = zero_shot_probabilities(image_features, W, logit_scale=scale)
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(6), atol=1e-6)
        assert (probabilities >= 0).all()


def test_scale_changes_confidence_not_the_prediction(model, tokenizer, image_features):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    cold, hot = (zero_shot_probabilities(image_features, W, logit_scale=s) for s in (1.0, 100.0))
    assert torch.equal(cold.argmax(1), hot.argmax(1))
    assert (hot.max(1).values >= cold.max(1).values).all()


def test_permuting_the_classes_permutes_the_predictions(model, tokenizer, image_features):
    order = [3, 0, 4, 1, 2]
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)
    W_permuted = build_zero_shot_classifier(model, tokenizer, [NAMES[i] for i in order], TEMPLATES)
    probabilities = zero_shot_probabilities(image_features, W)
    permuted = zero_shot_probabilities(image_features, W_permuted)
    assert torch.allclose(permuted, probabilities[:, order], atol=1e-6)
    assert [NAMES[order[i]] for i in permuted.argmax(1)] == [NAMES[i] for i in probabilities.argmax(1)]


def test_max_over_templates_is_the_best_single_template_score(model, tokenizer, image_features):
    features = encode_class_templates(model, tokenizer, NAMES, TEMPLATES)  # (K, T, D)
    logits = max_over_templates_logits(image_features, features)
    assert logits.shape == (6, len(NAMES))
    per_template = torch.stack([zero_shot_logits(image_features, features[:, j].T) for j in range(len(TEMPLATES))])
    assert torch.allclose(logits, per_template.max(dim=0).values, atol=1e-5)
    one = encode_class_templates(model, tokenizer, NAMES, TEMPLATES[:1])  # with one template: the plain classifier
    W_one = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES[:1])
    expected = zero_shot_logits(image_features, W_one)
    assert torch.allclose(max_over_templates_logits(image_features, one), expected, atol=1e-4)


def test_accuracy_top_k():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert accuracy(scores, labels) == pytest.approx(1 / 3)
    assert accuracy(scores, labels, k=2) == pytest.approx(2 / 3)
    assert accuracy(scores, labels, k=3) == 1.0


def _clusters(num_classes=6, per_class=30, dim=16, noise=0.6, seed=0):
    """Unit-norm features around one random direction per class, as a trained encoder gives."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, dim, generator=generator), dim=-1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    jitter = noise * torch.randn(len(labels), dim, generator=generator) / dim ** 0.5
    features = F.normalize(centres[labels] + jitter, dim=-1)
    return features, labels


def test_few_shot_indices_pick_k_of_every_class():
    _, labels = _clusters()
    picked = few_shot_indices(labels, 4, seed=0)
    assert torch.equal(torch.bincount(labels[picked]), torch.full((6,), 4))
    assert torch.equal(picked, few_shot_indices(labels, 4, seed=0))
    assert not torch.equal(picked, few_shot_indices(labels, 4, seed=1))


@pytest.mark.parametrize("k", [1, 4])
def test_linear_probe_beats_chance(k):
    features, labels = _clusters()
    train = few_shot_indices(labels, k, seed=0)
    test = torch.ones(len(labels), dtype=torch.bool)
    test[train] = False
    probe = train_linear_probe(features[train], labels[train], num_classes=6)
    assert probe.weight.shape == (6, 16)
    assert accuracy(probe(features[test]), labels[test]) > 3 / 6  # chance is 1/6


def test_linear_probe_is_deterministic():
    features, labels = _clusters()
    first, second = (train_linear_probe(features, labels, 6) for _ in range(2))
    assert torch.equal(first.weight, second.weight)


# ----------------------------------------------------------------------------- multiple choice

def test_questions_name_the_scene_and_hold_its_caption():
    scene = make_scene("red", "circle", "small", 2, "left")
    rng = np.random.default_rng(0)
    for kind, question_text in [("colour", "What colour are the two small circles on the left?"),
                                ("shape", "What shape are the two small red objects on the left?"),
                                ("count", "How many small red circles are on the left?")]:
        question = ask(scene, kind, rng)
        assert question.question == question_text
        assert question.texts[question.answer] == caption(scene)
        assert len(set(question.texts)) == len(question.texts) == len(question.choices)
        assert question.choices[question.answer] == str(getattr(scene, kind))
    assert len(ask(scene, "colour", rng).choices) == 4 and len(ask(scene, "count", rng).choices) == 3


def test_make_questions_cycles_through_the_kinds():
    scenes = make_dataset(6, "train", seed=0).scenes
    questions = make_questions(scenes, seed=0)
    assert [q.kind for q in questions] == ["colour", "shape", "count"] * 2
    assert questions == make_questions(scenes, seed=0)
    assert answers(questions).shape == (6,)


def test_choices_are_padded_and_masked(model, tokenizer):
    questions = make_questions(make_dataset(3, "train", seed=0).scenes)  # 4, 4, 3 choices
    choice_features, choice_mask = encode_choices(model, tokenizer, questions)
    assert choice_features.shape == (3, 4, 32)
    assert choice_mask.tolist() == [[True] * 4, [True] * 4, [True, True, True, False]]
    logits = choice_logits(torch.randn(3, 32), choice_features, choice_mask)
    assert logits[2, 3] == float("-inf") and torch.isfinite(logits[choice_mask]).all()


def test_an_image_that_matches_its_caption_answers_right(model, tokenizer):
    questions = make_questions(make_dataset(9, "all", seed=2).scenes)
    oracle = encode_texts(model, tokenizer, [q.texts[q.answer] for q in questions])  # "images" = true captions
    choice_features, choice_mask = encode_choices(model, tokenizer, questions)
    assert torch.equal(choice_logits(oracle, choice_features, choice_mask).argmax(1), answers(questions))


def test_fusion_classifier_learns_from_few_examples():
    generator = torch.Generator().manual_seed(0)
    B, num_choices, D = 96, 4, 16
    images = F.normalize(torch.randn(B, D, generator=generator), dim=-1)
    choices = F.normalize(torch.randn(B, num_choices, D, generator=generator), dim=-1)
    labels = torch.randint(0, num_choices, (B,), generator=generator)
    choices[torch.arange(B), labels] = F.normalize(images + 0.3 * torch.randn(B, D, generator=generator), dim=-1)
    mask = torch.ones(B, num_choices, dtype=torch.bool)
    classifier = train_fusion_classifier(images[:48], choices[:48], mask[:48], labels[:48], steps=150)
    assert isinstance(classifier, FusionClassifier)
    logits = classifier(images[48:], choices[48:], mask[48:])
    assert logits.shape == (48, num_choices)
    assert accuracy(logits, labels[48:]) > 0.6  # chance is 0.25


def test_fusion_training_is_seeded_and_leaves_the_global_rng_alone():
    images, choices = torch.rand(8, 4), torch.rand(8, 3, 4)
    mask, labels = torch.ones(8, 3, dtype=torch.bool), torch.zeros(8, dtype=torch.long)
    torch.manual_seed(123)
    first = train_fusion_classifier(images, choices, mask, labels, steps=2, seed=5)
    after = torch.rand(1)
    torch.manual_seed(123)
    second = train_fusion_classifier(images, choices, mask, labels, steps=2, seed=5)
    assert torch.equal(after, torch.rand(1))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


# ----------------------------------------------------------------------------- bad input

def test_empty_class_list(model, tokenizer):
    with pytest.raises(ValueError, match="class_names is empty"):
        build_zero_shot_classifier(model, tokenizer, [], TEMPLATES)


def test_template_without_placeholder(model, tokenizer):
    with pytest.raises(ValueError, match=r"template 'a photo of a' has no '\{\}' placeholder.*'a photo of a \{\}'"):
        build_zero_shot_classifier(model, tokenizer, NAMES, ["one {}", "a photo of a"])


def test_duplicate_class_names(model, tokenizer):
    with pytest.raises(ValueError, match=r"duplicate class names \['red circle'\]"):
        build_zero_shot_classifier(model, tokenizer, ["red circle", "blue square", "red circle"], TEMPLATES)


def test_wrong_types(model, tokenizer):
    with pytest.raises(TypeError, match=r"wrap a single name in a list: \['red circle'\]"):
        build_zero_shot_classifier(model, tokenizer, "red circle", TEMPLATES)
    with pytest.raises(TypeError, match="for a single prompt pass"):
        build_zero_shot_classifier(model, tokenizer, NAMES, "a {}")
    with pytest.raises(ValueError, match="templates is empty"):
        build_zero_shot_classifier(model, tokenizer, NAMES, [])
    with pytest.raises(TypeError, match="a template must be a string"):
        build_zero_shot_classifier(model, tokenizer, NAMES, [3])


def test_features_of_the_wrong_width(model, tokenizer):
    W = build_zero_shot_classifier(model, tokenizer, NAMES, TEMPLATES)  # (32, 5)
    with pytest.raises(ValueError, match=r"shape \(4, 64\).*expects \(B, 32\)"):
        zero_shot_probabilities(torch.randn(4, 64), W)
    with pytest.raises(ValueError, match=r"shape \(32,\)"):
        zero_shot_probabilities(torch.randn(32), W)
    with pytest.raises(TypeError, match="torch.Tensor"):
        zero_shot_probabilities(np.zeros((4, 32)), W)
    with pytest.raises(ValueError, match=r"\(K, T, D\)"):
        max_over_templates_logits(torch.randn(4, 64), torch.randn(5, 3, 32))
    with pytest.raises(ValueError, match="expects"):
        choice_logits(torch.randn(2, 16), torch.randn(2, 3, 32), torch.ones(2, 3, dtype=torch.bool))


def test_other_bad_input():
    with pytest.raises(ValueError, match="k=6 but there are 5 classes"):
        top_k(torch.rand(2, 5), 6)
    with pytest.raises(ValueError, match="fewer than k=40"):
        few_shot_indices(_clusters()[1], 40)
    with pytest.raises(ValueError, match="unknown question kind 'size'"):
        ask(make_scene("red", "circle"), "size", np.random.default_rng(0))
    with pytest.raises(ValueError, match="3 rows of scores but 2 labels"):
        accuracy(torch.rand(3, 4), torch.tensor([0, 1]))
