"""Benchmark for lesson 04: how well the tiny LLaVA answers, and how long all its training takes.

Trains everything lesson 04 needs from scratch (the tiny LM, then LLaVA's stage 1 and stage 2; the
tiny CLIP of lesson 02 is loaded from the cache, or trained first and not counted), then asks
questions about images it never saw:

    held-out images        new scenes of the 18 colour-shape pairs seen in training
    held-out combinations  scenes of the 6 pairs never seen in training (e.g. a blue circle)

Answer accuracy is the exact match of the greedy answer, averaged over the question kinds (colour,
shape, count, position, yes/no); caption exact match is the whole caption right, word for word.
Target: >= 90 % answer accuracy on held-out images after stage 2, with all training (LM + both
stages) under 3 minutes on 2 CPU cores.

Run: ``python benchmarks/llava.py [--threads 2] [--images 600]``. Nothing is read from or written to
the cache except the tiny CLIP. The last line printed is one JSON object (fractions in [0, 1],
times in seconds). ``train_seconds`` is wall-clock time; ``train_cpu_seconds`` the process's CPU time
over all its threads, which other jobs on a shared machine inflate far less than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from course_lib.llava import LlavaConfig, answer_accuracy, build_llava, caption_instructions, question_instructions
from course_lib.llava import train_stage, vision_tower
from course_lib.runtime import TRAINING_THREADS, seed_everything
from course_lib.shapes_data import make_dataset
from course_lib.tiny_clip import load_or_train_tiny_clip
from course_lib.tiny_lm import QUESTION_KINDS, LMTrainConfig, TinyLMConfig, TrainedLM, WordTokenizer, train_tiny_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=TRAINING_THREADS,
                        help="torch threads (default 2, as the notebook; on a busy machine 1 can be faster)")
    parser.add_argument("--images", type=int, default=600, help="test images per held-out set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)

    clip = load_or_train_tiny_clip()
    vision = vision_tower(clip)
    config = LlavaConfig()

    cpu_start = time.process_time()  # CPU seconds of this process, all threads: little inflated by other jobs
    start = time.perf_counter()
    lm_model, _ = train_tiny_lm(TinyLMConfig(), LMTrainConfig(), progress=False)
    lm_seconds = time.perf_counter() - start
    lm = TrainedLM(lm_model, WordTokenizer(), TinyLMConfig(), LMTrainConfig())

    model = build_llava(vision, lm, config)
    train = make_dataset(config.num_train_images, "train", seed=config.data_seed)
    features = model.image_features(train.images)
    start = time.perf_counter()
    train_stage(model, features, caption_instructions(train.scenes), 1, config.stage1, progress=False)
    stage1_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # LM + stage 1 (data generation included)

    test_sets = {"heldout": make_dataset(args.images, "train", seed=101),
                 "combinations": make_dataset(args.images, "heldout", seed=102)}
    test_features = {name: model.image_features(data.images) for name, data in test_sets.items()}
    test_data = {name: question_instructions(data.scenes, seed=7, yes_no_per_image=2)
                 for name, data in test_sets.items()}
    results = {"stage1": {name: answer_accuracy(model, test_features[name], test_data[name]) for name in test_sets}}

    start, cpu_start = time.perf_counter(), time.process_time()
    train_stage(model, features, question_instructions(train.scenes, config.data_seed, config.yes_no_per_image), 2,
                config.stage2, progress=False)
    stage2_seconds = time.perf_counter() - start
    cpu_seconds += time.process_time() - cpu_start
    results["stage2"] = {name: answer_accuracy(model, test_features[name], test_data[name]) for name in test_sets}

    kinds = QUESTION_KINDS + ("caption",)
    print(f"tiny LLaVA: {args.images} test images per set, torch threads {args.threads}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'after':<8}{'test set':<15}" + "".join(f"{kind:>10}" for kind in kinds) + f"{'answers':>10}")
    for stage, by_set in results.items():
        for name, accuracy in by_set.items():
            print(f"{stage:<8}{name:<15}" + "".join(f"{accuracy[kind]:>10.1%}" for kind in kinds)
                  + f"{accuracy['questions']:>10.1%}")
    train_seconds = lm_seconds + stage1_seconds + stage2_seconds
    print(f"training: LM {lm_seconds:.0f} s + stage 1 {stage1_seconds:.0f} s + stage 2 {stage2_seconds:.0f} s "
          f"= {train_seconds:.0f} s wall (target < 180 s), {cpu_seconds:.0f} CPU seconds over {args.threads} threads; "
          f"target answer accuracy >= 90 %")
    figures = {
        "stage1_heldout_answer_acc": results["stage1"]["heldout"]["questions"],
        "stage2_heldout_answer_acc": results["stage2"]["heldout"]["questions"],
        "stage1_combination_answer_acc": results["stage1"]["combinations"]["questions"],
        "stage2_combination_answer_acc": results["stage2"]["combinations"]["questions"],
        "stage1_heldout_caption_exact": results["stage1"]["heldout"]["caption"],
        "stage2_heldout_caption_exact": results["stage2"]["heldout"]["caption"],
        "stage2_combination_caption_exact": results["stage2"]["combinations"]["caption"],
        **{f"stage2_heldout_{kind.replace('/', '_')}_acc": results["stage2"]["heldout"][kind]
           for kind in QUESTION_KINDS},
        "lm_train_seconds": lm_seconds, "stage1_train_seconds": stage1_seconds,
        "stage2_train_seconds": stage2_seconds, "train_seconds": train_seconds, "train_cpu_seconds": cpu_seconds,
        "threads": args.threads,
    }
    print(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}))


if __name__ == "__main__":
    main()
