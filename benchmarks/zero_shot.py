"""Benchmark for lesson 03: zero-shot classification and multiple-choice questions with tiny CLIP.

1. Zero-shot top-1 over the 24 (colour, shape) classes, on pictures of pairs seen in training and of
   the 6 held-out pairs, with class names put into:
       - the bare class name ("{}") and CLIP's default single prompt ("a photo of a {}.");
       - each of the 24 caption-like templates alone ("two small {}s on the left"): mean, worst, best;
       - the ensemble of those 24, averaged as CLIP does (build_zero_shot_classifier);
       - the same 24 templates, each class scored by its best-matching template (max_over_templates_logits).
   Target: the ensemble does not lose to the single prompt on held-out pairs.
2. A linear probe with k = 1, 2, 4, 8, 16 labelled images per class vs zero-shot, on images of all 24 pairs.
3. Multiple-choice questions (colour, shape, count) by similarity, and by the fusion baseline trained
   on 60 questions about seen pairs. Target: multiple-choice accuracy >= 90 %.

Run: ``python benchmarks/zero_shot.py`` (loads lesson 02's tiny CLIP from the cache, or trains it).
The last line printed is one JSON object; accuracies are fractions in [0, 1]. ``multiple_choice_acc``
is over questions about pictures of all 24 pairs; the held-out and seen parts are given as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from course_lib.runtime import seed_everything
from course_lib.shapes_data import ALL_COMBINATIONS, make_dataset
from course_lib.tiny_clip import load_or_train_tiny_clip
from course_lib.zero_shot import (CAPTION_TEMPLATES, CLIP_TEMPLATE, accuracy, answers, build_zero_shot_classifier,
                                  choice_logits, class_names_of, encode_choices, encode_class_templates,
                                  encode_images, few_shot_indices, make_questions, max_over_templates_logits,
                                  train_fusion_classifier, train_linear_probe)

CLASS_NAMES = class_names_of(ALL_COMBINATIONS)


def labels_of(data) -> torch.Tensor:
    return torch.tensor([CLASS_NAMES.index(f"{scene.colour} {scene.shape}") for scene in data.scenes])


def zero_shot_table(model, tokenizer, num_images: int) -> dict[str, float]:
    template_features = encode_class_templates(model, tokenizer, CLASS_NAMES, CAPTION_TEMPLATES)  # (K, T, D)
    classifiers = {
        "class_name": build_zero_shot_classifier(model, tokenizer, CLASS_NAMES, ["{}"]),
        "single": build_zero_shot_classifier(model, tokenizer, CLASS_NAMES, [CLIP_TEMPLATE]),
        "ensemble": build_zero_shot_classifier(model, tokenizer, CLASS_NAMES, CAPTION_TEMPLATES),
    }
    results = {}
    print(f"zero-shot top-1 over {len(CLASS_NAMES)} classes ({num_images} test images per split)")
    print(f"{'prompt':<46}{'seen':>8}{'held-out':>10}")
    rows: dict[str, list[float]] = {}
    for split, name, seed in [("seen", "train", 101), ("heldout", "heldout", 102)]:
        data = make_dataset(num_images, name, seed=seed)
        features, labels = encode_images(model, data.images), labels_of(data)
        for key, classifier in classifiers.items():
            results[f"{split}_top1_{key}"] = accuracy(features @ classifier, labels)
        singles = [accuracy(features @ template_features[:, j].T, labels) for j in range(len(CAPTION_TEMPLATES))]
        results[f"{split}_top1_caption_template_mean"] = statistics.mean(singles)
        results[f"{split}_top1_caption_template_worst"] = min(singles)
        results[f"{split}_top1_caption_template_best"] = max(singles)
        best_match = max_over_templates_logits(features, template_features)  # (B, K)
        results[f"{split}_top1_ensemble_max"] = accuracy(best_match, labels)
    labels_text = {"class_name": "class name alone: '{}'", "single": f"single prompt: {CLIP_TEMPLATE!r}",
                   "caption_template_mean": "one caption template, mean of the 24",
                   "caption_template_worst": "one caption template, worst of the 24",
                   "caption_template_best": "one caption template, best of the 24",
                   "ensemble": "ensemble of the 24, averaged (CLIP)", "ensemble_max": "the 24, best-matching template"}
    for key, text in labels_text.items():
        rows[key] = [results[f"seen_top1_{key}"], results[f"heldout_top1_{key}"]]
        print(f"{text:<46}{rows[key][0]:>8.3f}{rows[key][1]:>10.3f}")
    print(f"{'chance':<46}{1 / len(CLASS_NAMES):>8.3f}{1 / len(CLASS_NAMES):>10.3f}")
    return results


def few_shot_table(model, tokenizer, num_images: int) -> dict[str, float]:
    pool, test = make_dataset(1200, "all", seed=103), make_dataset(num_images, "all", seed=104)
    pool_features, pool_labels = encode_images(model, pool.images), labels_of(pool)
    test_features, test_labels = encode_images(model, test.images), labels_of(test)
    results = {"all_top1_ensemble": accuracy(test_features @ build_zero_shot_classifier(
        model, tokenizer, CLASS_NAMES, CAPTION_TEMPLATES), test_labels)}
    template_features = encode_class_templates(model, tokenizer, CLASS_NAMES, CAPTION_TEMPLATES)
    best_match = max_over_templates_logits(test_features, template_features)  # (B, K)
    results["all_top1_ensemble_max"] = accuracy(best_match, test_labels)
    print(f"\nlinear probe vs zero-shot, images of all 24 pairs ({num_images} test images)")
    for k in (1, 2, 4, 8, 16):
        train = few_shot_indices(pool_labels, k, seed=0)
        probe = train_linear_probe(pool_features[train], pool_labels[train], num_classes=len(CLASS_NAMES))
        results[f"probe_top1_k{k}"] = accuracy(probe(test_features), test_labels)
        print(f"  linear probe, k = {k:>2} per class: {results[f'probe_top1_k{k}']:.3f}")
    print(f"  zero-shot ensemble (averaged):   {results['all_top1_ensemble']:.3f}")
    print(f"  zero-shot best-matching template: {results['all_top1_ensemble_max']:.3f}")
    return results


def multiple_choice_table(model, tokenizer, num_images: int) -> dict[str, float]:
    few = make_dataset(60, "train", seed=107)
    few_questions = make_questions(few.scenes, seed=2)
    few_choices, few_mask = encode_choices(model, tokenizer, few_questions)
    fusion = train_fusion_classifier(encode_images(model, few.images), few_choices, few_mask, answers(few_questions))
    results = {}
    print(f"\nmultiple-choice questions ({num_images} per split; colour, shape, count in turn)")
    print(f"{'questions about':<16}{'similarity':>11}{'colour':>8}{'shape':>8}{'count':>8}{'fusion (60 q.)':>16}")
    for split, name, seed in [("all", "all", 105), ("seen", "train", 106), ("heldout", "heldout", 108)]:
        data = make_dataset(num_images, name, seed=seed)
        questions = make_questions(data.scenes, seed=seed)
        choice_features, choice_mask = encode_choices(model, tokenizer, questions)
        image_features = encode_images(model, data.images)
        right = choice_logits(image_features, choice_features, choice_mask).argmax(1) == answers(questions)
        per_kind = {kind: right[[q.kind == kind for q in questions]].float().mean().item()
                    for kind in ("colour", "shape", "count")}
        prefix = "multiple_choice_acc" if split == "all" else f"{split}_multiple_choice_acc"
        results[prefix] = right.float().mean().item()
        fused_logits = fusion(image_features, choice_features, choice_mask)  # (B, num_choices)
        results[f"{split}_fusion_acc"] = accuracy(fused_logits, answers(questions))
        print(f"{split:<16}{results[prefix]:>11.3f}" + "".join(f"{v:>8.3f}" for v in per_kind.values())
              + f"{results[f'{split}_fusion_acc']:>16.3f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200, help="test images per split")
    args = parser.parse_args()
    seed_everything(0)
    start = time.perf_counter()
    tiny_clip = load_or_train_tiny_clip(progress=False)
    model, tokenizer = tiny_clip.model, tiny_clip.tokenizer
    results = {**zero_shot_table(model, tokenizer, args.images), **few_shot_table(model, tokenizer, args.images),
               **multiple_choice_table(model, tokenizer, args.images)}
    results["chance_top1"] = 1 / len(CLASS_NAMES)
    results["seconds"] = time.perf_counter() - start
    not_worse = results["heldout_top1_ensemble"] >= results["heldout_top1_single"]
    print(f"\nensemble >= single prompt on held-out pairs: {not_worse} (target: True); "
          f"multiple-choice accuracy {results['multiple_choice_acc']:.1%} (target >= 90 %)")
    print(json.dumps({key: round(value, 4) for key, value in results.items()}))


if __name__ == "__main__":
    main()
