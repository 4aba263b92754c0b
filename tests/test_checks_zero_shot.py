"""The lesson 03 checks pass on the reference, fail precisely on wrong answers, say 'todo' on stubs."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.zero_shot import check_answer_multiple_choice, check_build_classifier, check_zero_shot_accuracy
from course_lib.zero_shot import (accuracy, build_zero_shot_classifier, choice_logits, encode_choices, encode_texts,
                                  fill_templates)


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def reference_accuracy(image_features, classifier, labels):
    return accuracy(image_features @ classifier, labels)


def reference_answer(model, tokenizer, image_features, questions):
    choice_features, choice_mask = encode_choices(model, tokenizer, questions)
    return choice_logits(image_features, choice_features, choice_mask).argmax(1).tolist()


def test_checks_pass_on_reference(model, tokenizer):
    assert check_build_classifier(build_zero_shot_classifier, model, tokenizer).passed
    assert check_zero_shot_accuracy(reference_accuracy).passed
    assert check_answer_multiple_choice(reference_answer, model, tokenizer).passed


def test_checks_report_stubs_as_todo(model, tokenizer):
    results = [check_build_classifier(stub, model, tokenizer), check_zero_shot_accuracy(stub),
               check_answer_multiple_choice(stub, model, tokenizer)]
    for result in results:
        assert result.status == "todo" and "not implemented yet" in repr(result)


def _unnormalised_average(model, tokenizer, names, templates):
    with torch.no_grad():
        raw = model.encode_text(tokenizer(fill_templates(names, templates)))
    return F.normalize(raw.reshape(len(names), len(templates), -1).mean(1), dim=-1).T


def test_classifier_check_names_the_mistake(model, tokenizer):
    transposed = check_build_classifier(lambda *a: build_zero_shot_classifier(*a).T, model, tokenizer)
    assert transposed.status == "fail" and "(K, D)" in transposed.message and ".T" in transposed.message
    late = check_build_classifier(_unnormalised_average, model, tokenizer)
    assert late.status == "fail" and "normalised before averaging" in late.message
    no_renorm = check_build_classifier(
        lambda m, t, names, templates: encode_texts(m, t, fill_templates(names, templates))
        .reshape(len(names), len(templates), -1).mean(1).T, model, tokenizer)
    assert no_renorm.status == "fail" and "renormalise" in no_renorm.message


def test_accuracy_check_catches_percentages_counts_and_wrong_axis():
    percent = check_zero_shot_accuracy(lambda f, w, y: 100 * reference_accuracy(f, w, y))
    assert percent.status == "fail" and "percentage" in percent.message
    count = check_zero_shot_accuracy(lambda f, w, y: ((f @ w).argmax(1) == y).sum().item())
    assert count.status == "fail" and "divide by B" in count.message
    as_tensor = check_zero_shot_accuracy(lambda f, w, y: ((f @ w).argmax(1) == y).float().mean())
    assert as_tensor.passed  # a 0-d tensor is fine
    wrong = check_zero_shot_accuracy(lambda f, w, y: ((f @ w).argmin(1) == y).float().mean().item())
    assert wrong.status == "fail" and "argmax" in wrong.message


def test_multiple_choice_check_explains(model, tokenizer):
    def least_similar(model, tokenizer, image_features, questions):
        choice_features, choice_mask = encode_choices(model, tokenizer, questions)
        return choice_logits(-image_features, choice_features, choice_mask).argmax(1)

    result = check_answer_multiple_choice(least_similar, model, tokenizer)
    assert result.status == "fail" and "argmin" in result.message
    always_first = check_answer_multiple_choice(lambda m, t, f, qs: [0] * len(qs), model, tokenizer)
    assert always_first.status == "fail" and "question" in always_first.message
    too_few = check_answer_multiple_choice(lambda m, t, f, qs: [0], model, tokenizer)
    assert too_few.status == "fail" and "one chosen index per question" in too_few.message
