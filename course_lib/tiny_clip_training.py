"""Training the tiny CLIP contrastively, evaluating it, and caching it for the later lessons.

The training loop is the lecture's pseudocode repeated (Radford et al., 2021, Figure 3): draw n
image-caption pairs, encode both, :func:`course_lib.tiny_clip.contrastive_loss`, an AdamW step,
then clamp the temperature so that ``exp(t) <= 100``.

Two details make the batches honest and the model general:

- **No false negatives.** The loss treats every other caption of the batch as wrong for an image.
  If two images of a batch had the same caption, the loss would push an image away from a caption
  that describes it. :func:`sample_batch` never puts two such pairs in one batch.
- **Colourless copies.** A share of the images (``config.colourless_fraction``) is repainted, in
  grey or in a random colour that no caption names, and its caption leaves the colour out ("two
  small triangles on the left"). Otherwise the image tower can learn "yellow and pointy means
  cross" from the combinations it sees, and fail on a yellow triangle it has never seen; a repainted
  triangle can only be recognised by its shape. A colourless caption describes a scene of *any*
  colour, so the sampler keeps those out of each other's batches too.

``load_or_train_tiny_clip()`` is what lessons 03-05 call: it loads the weights from
``course_lib.runtime.cache_dir()`` (saved with their config and a SHA-256 checksum, read back with
``torch.load(weights_only=True)``) or, if the file is missing, corrupt or made for another config,
trains again (about a minute on two CPU cores) and saves them.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from course_lib import shapes_data
from course_lib.runtime import TRAINING_THREADS, cache_dir, settings_key, state_dict_sha256, torch_threads
from course_lib.shapes_data import ALL_COMBINATIONS, BACKGROUND, COLOURS, Scene, ShapesDataset, caption
from course_lib.tiny_clip import (TinyClipConfig, build_tiny_clip, clamp_logit_scale_, contrastive_loss,
                                  encode_images, encode_texts, get_tokenizer, tokenize)

CACHE_FORMAT = 1  # bump when the file layout changes
HELD_IN_TEST_SEED, HELDOUT_TEST_SEED = 1, 2  # test scenes; the training scenes use config.seed (0)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B in the perceived brightness
UNNAMED_DISTANCE = 0.35  # a repainting colour is at least this far (RGB distance) from every named colour


@dataclass
class TrainingMetrics:
    """What happened during training (saved in the cache with the weights)."""

    loss_history: list[float] = field(default_factory=list)  # the loss at every step
    logit_scale_history: list[float] = field(default_factory=list)  # exp(t) after every step
    steps: int = 0  # optimiser steps taken
    train_seconds: float = 0.0  # wall-clock time of train_tiny_clip, data generation included


@dataclass
class TrainedTinyClip:
    """A trained tiny CLIP, ready to use: the model is in eval mode."""

    model: open_clip.CLIP
    tokenizer: open_clip.tokenizer.SimpleTokenizer
    config: TinyClipConfig
    metrics: TrainingMetrics
    source: str = ""  # "trained" or "cache: <path>", for the notebook to say where it came from


def repaint(images: torch.Tensor, old_colours: torch.Tensor, new_colours: torch.Tensor) -> torch.Tensor:
    """Repaint the shapes of ``(B, 3, H, W)`` images, each drawn in one colour, in another colour.

    A pixel of a drawn scene is ``background + coverage * (colour - background)``, where coverage in
    [0, 1] is the share of the pixel the shapes cover (less than 1 on antialiased edges). Projecting
    the pixel on ``colour - background`` recovers the coverage; the new colour is painted with it.

    Args:
        images: ``(B, 3, H, W)`` from :mod:`course_lib.shapes_data`.
        old_colours: ``(B, 3)`` RGB of each image's shapes; ``new_colours``: ``(B, 3)`` to paint.
    """
    B = images.shape[0]
    old = (old_colours - BACKGROUND).view(B, 3, 1, 1)
    coverage = ((images - BACKGROUND) * old).sum(dim=1, keepdim=True) / (old ** 2).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    return BACKGROUND + coverage.clamp(0, 1) * (new_colours - BACKGROUND).view(B, 3, 1, 1)  # (B, 3, H, W)


def colourless_colours(rng: np.random.Generator, old_colours: torch.Tensor) -> torch.Tensor:
    """New colours for colourless copies: half the time grey of the same brightness, half the time a
    random colour that is none of the named ones. ``(B, 3)`` -> ``(B, 3)``."""
    named = np.array(list(COLOURS.values()))  # (6, 3)
    new_colours = []
    for old in old_colours.tolist():
        if rng.random() < 0.5:
            new_colours.append([float(np.dot(LUMA, old))] * 3)  # grey, as bright as the old colour
            continue
        while True:  # rejection sampling: a colour far from every named one, and from the background
            colour = rng.uniform(0, 1, size=3)
            if (np.linalg.norm(named - colour, axis=1).min() > UNNAMED_DISTANCE
                    and np.linalg.norm(colour - BACKGROUND) > UNNAMED_DISTANCE):
                new_colours.append(colour.tolist())
                break
    return torch.tensor(new_colours, dtype=old_colours.dtype)


def sample_batch(rng: np.random.Generator, scenes: list[Scene], batch_size: int,
                 colourless_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw a batch in which no caption also describes another image of the batch.

    A coloured caption ("two small red triangles on the left") describes every scene with those
    five attributes; a colourless one ("two small triangles on the left") every scene with those
    four, whatever its colour. Candidates are drawn at random, a share ``colourless_fraction`` of
    them made colourless, and skipped if they clash with one already taken.

    Returns:
        ``indices`` (B,) into ``scenes`` and ``colourless`` (B,) bool: which ones to repaint.
    """
    taken_coloured = set()  # (colour, shape, size, count, position) of each coloured caption taken
    taken_colourless = set()  # (shape, size, count, position) of each colourless caption taken
    taken_any = set()  # (shape, size, count, position) of each image taken
    indices, colourless = [], []
    for index in rng.permutation(len(scenes)):
        scene, is_colourless = scenes[index], bool(rng.random() < colourless_fraction)
        facts = (scene.shape, scene.size, scene.count, scene.position)
        if is_colourless:
            if facts in taken_any:  # "two small triangles on the left" would fit an image already taken
                continue
            taken_colourless.add(facts)
        else:
            if (scene.colour, *facts) in taken_coloured or facts in taken_colourless:  # same caption, or
                continue  # a colourless caption already taken describes this image
            taken_coloured.add((scene.colour, *facts))
        taken_any.add(facts)
        indices.append(index)
        colourless.append(is_colourless)
        if len(indices) == batch_size:
            return np.array(indices), np.array(colourless)
    raise ValueError(f"only {len(indices)} of {len(scenes)} scenes can share a batch without a shared "
                     f"caption; lower batch_size ({batch_size}) or raise num_train_images")


def _learning_rate(step: int, config: TinyClipConfig) -> float:
    """Linear warm-up to the peak, then a cosine decay to zero at the last step."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, config: TinyClipConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only, as open_clip's training script does."""
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in name]
    no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in name)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)  # fused: one kernel, fast on CPU


def train_tiny_clip(config: TinyClipConfig | None = None, *, progress: bool = True,
                    loss_fn: Callable[..., torch.Tensor] = contrastive_loss,
                    num_threads: int | None = TRAINING_THREADS) -> TrainedTinyClip:
    """Train a tiny CLIP from scratch on the "train" split of :mod:`course_lib.shapes_data`.

    Deterministic: the same config gives the same weights on the same machine.

    Args:
        config: model and training settings; the default is the course's (about a minute on 2 cores).
        progress: show a ``tqdm`` progress bar with the running loss.
        loss_fn: ``(image_features, text_features, logit_scale) -> loss``, contrastive_loss by default.
        num_threads: torch's CPU threads while training, restored afterwards; ``None`` keeps the
            current setting. :data:`~course_lib.runtime.TRAINING_THREADS` (2) by default: about
            56 s for the default config on 2 idle cores, 77 s on one thread. Another count trains
            slightly different weights; on a busy machine 1 can be faster (see ``torch_threads``).

    Returns:
        A :class:`TrainedTinyClip` with the model in eval mode and its :class:`TrainingMetrics`.
    """
    config = config or TinyClipConfig()
    with torch_threads(num_threads):
        return _train(config, progress, loss_fn)


def _train(config: TinyClipConfig, progress: bool, loss_fn: Callable[..., torch.Tensor]) -> TrainedTinyClip:
    start = time.perf_counter()
    data = shapes_data.make_dataset(config.num_train_images, "train", seed=config.seed, image_size=config.image_size)
    if config.mirror:  # twice the images for free: flip each one, and swap left and right in its scene
        scenes = data.scenes + [scene.mirrored() for scene in data.scenes]
        data = ShapesDataset(torch.cat([data.images, data.images.flip(-1)]), scenes,
                             [caption(scene) for scene in scenes], "train", config.seed)
    tokenizer = get_tokenizer(config)
    coloured_tokens = tokenize(tokenizer, data.captions)  # (N, L)
    colourless_tokens = tokenize(tokenizer, [caption(scene, with_colour=False) for scene in data.scenes])  # (N, L)
    scene_colours = torch.tensor([COLOURS[scene.colour] for scene in data.scenes])  # (N, 3)
    model = build_tiny_clip(config)
    optimizer = _optimizer(model, config)
    rng = np.random.default_rng(config.seed)
    metrics = TrainingMetrics()
    model.train()
    bar = tqdm(range(config.steps), desc="training tiny CLIP", disable=not progress, mininterval=0.5)
    for step in bar:
        indices, colourless = sample_batch(rng, data.scenes, config.batch_size, config.colourless_fraction)
        images = data.images[indices]  # (B, 3, H, W), a copy
        tokens = coloured_tokens[indices]  # (B, L), a copy
        if colourless.any():  # repaint those images, and take their captions without colour
            chosen = indices[colourless]  # (b,)
            repainted = repaint(images[torch.from_numpy(colourless)], scene_colours[chosen],
                                colourless_colours(rng, scene_colours[chosen]))  # (b, 3, H, W)
            images[torch.from_numpy(colourless)] = repainted
            tokens[torch.from_numpy(colourless)] = colourless_tokens[chosen]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)

        image_features, text_features, logit_scale = model(images, tokens)  # (B, D), (B, D), exp(t)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_logit_scale_(model)

        metrics.loss_history.append(loss.item())
        metrics.logit_scale_history.append(model.logit_scale.exp().item())
        if step % 25 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{metrics.logit_scale_history[-1]:.1f}")
    metrics.steps = config.steps
    metrics.train_seconds = time.perf_counter() - start
    return TrainedTinyClip(model.eval(), tokenizer, config, metrics, source="trained")


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def recall_at_1(model: open_clip.CLIP, tokenizer, data: ShapesDataset) -> float:
    """Image -> text retrieval: the share of images whose most similar caption, among all distinct
    captions of ``data``, is their own."""
    candidates = sorted(set(data.captions))
    similarity = encode_images(model, data.images) @ encode_texts(model, tokenizer, candidates).T  # (B, K)
    best = similarity.argmax(dim=1).tolist()
    return float(np.mean([candidates[k] == text for k, text in zip(best, data.captions)]))


def combination_captions(scene: Scene) -> list[str]:
    """The scene's caption with each of the 24 (colour, shape) pairs in turn, in ALL_COMBINATIONS order."""
    return [caption(Scene(colour, shape, scene.size, scene.count, scene.position, scene.centres))
            for colour, shape in ALL_COMBINATIONS]


@torch.no_grad()
def combination_zero_shot(model: open_clip.CLIP, tokenizer, data: ShapesDataset) -> tuple[float, list[tuple[str, str]]]:
    """Zero-shot (colour, shape) recognition: for each image, pick the most similar of its caption's
    24 versions (one per colour-shape pair, all else equal). Chance is 1/24.

    Returns:
        The top-1 accuracy and the predicted (colour, shape) of each image.
    """
    image_features = encode_images(model, data.images)  # (B, D)
    texts = [text for scene in data.scenes for text in combination_captions(scene)]  # B * 24 captions
    distinct = sorted(set(texts))  # many scenes share captions: encode each distinct one once
    distinct_features = encode_texts(model, tokenizer, distinct)  # (K, D)
    row = {text: k for k, text in enumerate(distinct)}
    text_features = distinct_features[[row[text] for text in texts]].view(len(data), len(ALL_COMBINATIONS), -1)  # (B, 24, D)
    similarity = torch.einsum("bd,bkd->bk", image_features, text_features)  # (B, 24)
    predicted = [ALL_COMBINATIONS[k] for k in similarity.argmax(dim=1).tolist()]
    accuracy = float(np.mean([p == scene.combination for p, scene in zip(predicted, data.scenes)]))
    return accuracy, predicted


def evaluate_tiny_clip(trained: TrainedTinyClip, num_images: int = 600) -> dict[str, float]:
    """The course's three numbers on fresh test scenes (seeds 1 and 2, never trained on).

    Returns:
        ``recall_at_1`` (held-in test images, among their distinct captions), ``seen_zero_shot_top1``
        and ``heldout_zero_shot_top1`` (colour-shape pair among 24) and ``chance`` (1/24).
    """
    size = trained.config.image_size
    held_in = shapes_data.make_dataset(num_images, "train", seed=HELD_IN_TEST_SEED, image_size=size)
    held_out = shapes_data.make_dataset(num_images, "heldout", seed=HELDOUT_TEST_SEED, image_size=size)
    model, tokenizer = trained.model, trained.tokenizer
    return {"recall_at_1": recall_at_1(model, tokenizer, held_in),
            "seen_zero_shot_top1": combination_zero_shot(model, tokenizer, held_in)[0],
            "heldout_zero_shot_top1": combination_zero_shot(model, tokenizer, held_out)[0],
            "chance": 1 / len(ALL_COMBINATIONS)}


# ---------------------------------------------------------------------------------------------
# The cache


def _config_record(config: TinyClipConfig) -> dict:
    """What the weights depend on: the config, the data's version, the open_clip version and the
    thread count that :func:`load_or_train_tiny_clip` trains with."""
    return {"config": asdict(config), "data_version": shapes_data.DATA_VERSION,
            "open_clip": open_clip.__version__, "format": CACHE_FORMAT, "training_threads": TRAINING_THREADS}


def cache_path(config: TinyClipConfig | None = None) -> Path:
    """Where the weights for ``config`` are cached: one file per distinct config."""
    return cache_dir() / f"tiny_clip_{settings_key(_config_record(config or TinyClipConfig()))}.pt"


def save_trained(trained: TrainedTinyClip, path: Path | None = None) -> Path:
    """Write the weights, config, metrics and checksum; atomic (a reader never sees half a file)."""
    path = Path(path or cache_path(trained.config))
    state_dict = {name: tensor.detach().clone() for name, tensor in trained.model.state_dict().items()}
    payload = {**_config_record(trained.config), "metrics": asdict(trained.metrics),
               "state_dict": state_dict, "sha256": state_dict_sha256(state_dict)}
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


class CacheError(Exception):
    """The cached file cannot be used: unreadable, tampered with, or made for another config."""


def load_trained(config: TinyClipConfig | None = None, path: Path | None = None) -> TrainedTinyClip:
    """Load cached weights for ``config``; raises :class:`CacheError` saying why it cannot."""
    config = config or TinyClipConfig()
    path = Path(path or cache_path(config))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CacheError(f"{path} is unreadable ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CacheError(f"{path} does not hold a tiny CLIP")
    expected = _config_record(config)
    stored = {key: payload.get(key) for key in expected}
    if stored != expected:
        raise CacheError(f"{path} was made for another config or version: {stored} != {expected}")
    if state_dict_sha256(payload["state_dict"]) != payload.get("sha256"):
        raise CacheError(f"{path} fails its SHA-256 checksum: the weights were changed or damaged")
    model = build_tiny_clip(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CacheError(f"{path} does not fit the model: {error}") from error
    metrics = TrainingMetrics(**payload["metrics"])
    return TrainedTinyClip(model.eval(), get_tokenizer(config), config, metrics, source=f"cache: {path}")


def load_or_train_tiny_clip(config: TinyClipConfig | None = None, *, progress: bool = True,
                            retrain: bool = False) -> TrainedTinyClip:
    """The trained tiny CLIP: from the cache if it is there and sound, otherwise trained and cached.

    A missing file is simply trained (a progress bar shows it); a corrupt or mismatched one gives a
    warning saying why, and is trained again and overwritten. Never raises for a bad cache.

    Args:
        config: the settings; the default is the course's, the one every lesson uses.
        progress: show the training progress bar if training is needed.
        retrain: train even if the cache holds the model.

    Returns:
        :class:`TrainedTinyClip` ``(model, tokenizer, config, metrics, source)``, model in eval mode.

    Example:
        >>> clip = load_or_train_tiny_clip()
        >>> clip.model.encode_image(images, normalize=True)      # images: (B, 3, 32, 32) in [0, 1]
    """
    config = config or TinyClipConfig()
    if not retrain:
        try:
            return load_trained(config)
        except FileNotFoundError:
            pass
        except CacheError as problem:
            warnings.warn(f"{problem}; training the tiny CLIP again", stacklevel=2)
    trained = train_tiny_clip(config, progress=progress)
    try:
        save_trained(trained)
    except OSError as error:  # a read-only or full disk costs a retraining next time, not a crash now
        warnings.warn(f"could not cache the tiny CLIP ({error}); it will be trained again next time", stacklevel=2)
    return trained
