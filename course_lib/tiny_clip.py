"""A tiny CLIP: an image tower and a text tower trained to agree, with a contrastive loss.

Lecture: "CLIP - Contrastive pretraining pseudocode" (Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", ICML 2021, Figure 3)::

    I_f = image_encoder(I)                           #[n, d_i]
    T_f = text_encoder(T)                            #[n, d_t]
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)     # joint multimodal embedding [n, d_e]
    T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
    logits = np.dot(I_e, T_e.T) * np.exp(t)          # scaled pairwise cosine similarities [n, n]
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss = (loss_i + loss_t)/2

The model is a real ``open_clip.CLIP`` (mlfoundations/open_clip), only small, built from
:class:`TinyClipConfig` with random weights: nothing is downloaded. Its image tower is a Vision
Transformer whose first layer, ``visual.conv1`` (a Conv2d with kernel = stride = P), is lesson 01's
patchify followed by one linear map ``W f(p_i)``. ``model.encode_image`` computes ``I_f @ W_i``
(``visual.proj`` is W_i) and ``model.encode_text`` computes ``T_f @ W_t`` (``text_projection``);
``model.logit_scale`` is the learned temperature t, and ``np.exp(t)`` is ``model.logit_scale.exp()``.

Public interface (later lessons rely on it):

    TinyClipConfig                       the model's and the training's settings (a dataclass)
    build_tiny_clip(config) -> open_clip.CLIP        random weights, seeded by config.seed
    get_tokenizer(config) -> SimpleTokenizer         open_clip's own BPE tokenizer, offline
    tokenize(tokenizer, captions) -> (B, L) int64    with clear errors for empty or long captions
    encode_images(model, images) -> (B, D)           L2-normalised; images (B, 3, 32, 32) in [0, 1]
    encode_texts(model, tokenizer, captions) -> (K, D)   L2-normalised
    contrastive_loss(image_features, text_features, logit_scale) -> scalar   = open_clip.ClipLoss
    clamp_logit_scale_(model)            keep exp(t) <= 100, after every optimiser step
    load_or_train_tiny_clip(config=None) -> TrainedTinyClip(model, tokenizer, config, metrics, source)
    train_tiny_clip(config=None) -> TrainedTinyClip

The last two live in :mod:`course_lib.tiny_clip_training` (training loop, batches, cache) and are
importable from here. Images go in as :mod:`course_lib.shapes_data` makes them: ``(B, 3, 32, 32)``
float32 in [0, 1], no further normalisation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F

VOCAB_SIZE = 49408  # open_clip's BPE vocabulary; the end-of-text token has the largest id, 49407
INIT_LOGIT_SCALE = math.log(1 / 0.07)  # t at the start: exp(t) = 1/0.07 ~ 14.3, as CLIP
MAX_LOGIT_SCALE = math.log(100)  # t is clamped here after every step: exp(t) <= 100, as CLIP


@dataclass(frozen=True)
class TinyClipConfig:
    """Everything that defines a trained tiny CLIP; two equal configs train the same weights."""

    # The model: open_clip's CLIP with its vision_cfg and text_cfg shrunk.
    image_size: int = 32  # H = W of the input images in pixels
    patch_size: int = 8  # P: an image becomes (H/P) * (W/P) = 16 patch tokens (+ 1 class token)
    vision_width: int = 64  # D of the image transformer (d_i in the pseudocode)
    vision_layers: int = 2  # transformer blocks in the image tower
    vision_head_width: int = 32  # width of one attention head: heads = vision_width / this
    context_length: int = 12  # L: tokens per caption, start and end tokens included
    text_width: int = 64  # D of the text transformer (d_t in the pseudocode)
    text_heads: int = 2  # attention heads in the text tower
    text_layers: int = 2  # transformer blocks in the text tower
    embed_dim: int = 64  # width of the joint embedding space (d_e in the pseudocode)
    # The training (course_lib.tiny_clip_training).
    num_train_images: int = 5000  # scenes of the "train" split generated once, then sampled
    batch_size: int = 128  # n: image-caption pairs per step, no caption describing another image
    steps: int = 1600  # optimiser steps
    learning_rate: float = 5e-3  # AdamW's peak learning rate
    warmup_steps: int = 50  # linear warm-up, then a cosine decay to zero
    weight_decay: float = 0.1  # AdamW's, on matrices only (not biases, norms, embeddings, t)
    colourless_fraction: float = 0.5  # share of images repainted (grey or unnamed colour), caption without colour
    mirror: bool = True  # also train on every image flipped left-right ("left" <-> "right" in its caption)
    seed: int = 0  # seeds the weights, the training scenes and the batches

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"TinyClipConfig.{name} must not be negative, got {value}")
        for name in ("image_size", "patch_size", "vision_width", "vision_layers", "vision_head_width",
                     "context_length", "text_width", "text_heads", "text_layers", "embed_dim",
                     "num_train_images", "batch_size", "steps"):
            if getattr(self, name) == 0:
                raise ValueError(f"TinyClipConfig.{name} must be positive")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.vision_width % self.vision_head_width or self.text_width % self.text_heads:
            raise ValueError(f"widths must split evenly into heads: vision_width {self.vision_width} / "
                             f"vision_head_width {self.vision_head_width}, text_width {self.text_width} / "
                             f"text_heads {self.text_heads}")
        if not 0 <= self.colourless_fraction <= 1:
            raise ValueError(f"colourless_fraction must be in [0, 1], got {self.colourless_fraction}")


def build_tiny_clip(config: TinyClipConfig | None = None) -> open_clip.CLIP:
    """An ``open_clip.CLIP`` of the tiny size, randomly initialised from ``config.seed``.

    Torch's global random state is left as it was (the seed is used in a forked generator).

    Example:
        >>> model = build_tiny_clip(TinyClipConfig())
        >>> model.visual.conv1          # patchify + a linear map, as one convolution
        Conv2d(3, 64, kernel_size=(8, 8), stride=(8, 8), bias=False)
    """
    config = config or TinyClipConfig()
    vision_cfg = dict(image_size=config.image_size, patch_size=config.patch_size, width=config.vision_width,
                      layers=config.vision_layers, head_width=config.vision_head_width)
    text_cfg = dict(context_length=config.context_length, vocab_size=VOCAB_SIZE, width=config.text_width,
                    heads=config.text_heads, layers=config.text_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return open_clip.CLIP(config.embed_dim, vision_cfg, text_cfg, init_logit_scale=INIT_LOGIT_SCALE)


@functools.lru_cache(maxsize=4)
def _simple_tokenizer(context_length: int) -> open_clip.tokenizer.SimpleTokenizer:
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)  # reads the BPE merges: ~0.5 s


def get_tokenizer(config: TinyClipConfig | None = None) -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's own tokenizer (CLIP's byte-pair encoding), producing ``config.context_length`` tokens.

    The vocabulary ships inside the open_clip package, so this works offline. Lower-cases the text.

    Example:
        >>> get_tokenizer()(["one red circle"])[0, :6]   # start, three words, end, padding...
        tensor([49406,   637,   736,  7117, 49407,     0])
    """
    config = config or TinyClipConfig()
    return _simple_tokenizer(config.context_length)


def tokenize(tokenizer: open_clip.tokenizer.SimpleTokenizer, captions: str | Sequence[str]) -> torch.Tensor:
    """Token ids of captions: ``[start, word pieces..., end, 0, 0, ...]``, one row per caption.

    Unlike the tokenizer alone, this refuses an empty caption (it would be a row with no words) and a
    caption too long for the context (the tokenizer would silently cut its end off).

    Returns:
        ``(B, L)`` int64 with ``L = tokenizer.context_length``.
    """
    if isinstance(captions, str):
        captions = [captions]
    if len(captions) == 0:
        raise ValueError("captions is empty; pass at least one caption")
    for index, text in enumerate(captions):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"caption {index} is {text!r}; every caption needs at least one word")
    distinct = list(dict.fromkeys(captions))  # each distinct caption is encoded once
    for text in distinct:
        index = captions.index(text)
        needed = len(tokenizer.encode(text)) + 2  # + start and end tokens
        if needed > tokenizer.context_length:
            raise ValueError(f"caption {index} {text!r} needs {needed} tokens, but the context holds "
                             f"{tokenizer.context_length}; shorten it or use a longer context_length")
    rows = {text: row for text, row in zip(distinct, tokenizer(distinct))}  # (L,) each
    return torch.stack([rows[text] for text in captions])  # (B, L)


def encode_images(model: open_clip.CLIP, images: torch.Tensor) -> torch.Tensor:
    """``I_e``: the L2-normalised image embeddings, ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)``."""
    expected = model.visual.image_size  # (H, W)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if tuple(images.shape[2:]) != tuple(expected):
        raise ValueError(f"images are {tuple(images.shape[2:])} pixels but this model takes {tuple(expected)}; "
                         "make them with course_lib.shapes_data at the config's image_size")
    return model.encode_image(images, normalize=True)


def encode_texts(model: open_clip.CLIP, tokenizer: open_clip.tokenizer.SimpleTokenizer,
                 captions: str | Sequence[str]) -> torch.Tensor:
    """``T_e``: the L2-normalised text embeddings of ``K`` captions, ``(K, D)``."""
    return model.encode_text(tokenize(tokenizer, captions), normalize=True)


def _validate_features(image_features: torch.Tensor, text_features: torch.Tensor,
                       logit_scale: torch.Tensor | float) -> None:
    for name, features in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"{name} must be a (B, D) tensor, got {shape}")
        norms = features.detach().norm(dim=-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise ValueError(f"{name} must be L2-normalised (unit rows) but its row norms range from "
                             f"{norms.min().item():.4g} to {norms.max().item():.4g}; "
                             "normalise first: F.normalize(features, dim=-1)")
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features {tuple(image_features.shape)} and text_features "
                         f"{tuple(text_features.shape)} differ; row i of each must be the i-th image and its caption")
    scale = torch.as_tensor(logit_scale)
    if scale.numel() != 1 or not bool(torch.isfinite(scale).all()) or scale.item() <= 0:
        raise ValueError(f"logit_scale must be one positive number, the multiplier exp(t), got {logit_scale!r}")


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over a batch of n aligned image-caption pairs.

    Row i of ``image_features`` and row i of ``text_features`` belong together; every other pairing
    in the batch is a negative. Equal to ``open_clip.ClipLoss()(image_features, text_features,
    logit_scale)``::

        logits = logit_scale * I_e @ T_e^T                          (n, n)
        loss = ( CE(logits, arange(n)) + CE(logits^T, arange(n)) ) / 2

    Args:
        image_features: ``(B, D)`` L2-normalised image embeddings ``I_e``.
        text_features: ``(B, D)`` L2-normalised text embeddings ``T_e``, row i the caption of image i.
        logit_scale: the multiplier ``exp(t)`` (already exponentiated), e.g. ``model.logit_scale.exp()``.

    Returns:
        The scalar loss (natural log units; ``ln n`` for a model that cannot tell the pairs apart).

    Example:
        >>> features = torch.eye(4)                   # four perfectly separated, aligned pairs
        >>> round(contrastive_loss(features, features, 100.0).item(), 6)
        0.0
    """
    _validate_features(image_features, text_features, logit_scale)
    n = image_features.shape[0]
    # scaled pairwise cosine similarities [n, n]: row i is image i against every caption
    logits = image_features @ text_features.T * logit_scale  # (B, D) @ (D, B) -> (B, B)
    # symmetric loss function
    labels = torch.arange(n, device=logits.device)  # image i goes with caption i: the diagonal
    loss_i = F.cross_entropy(logits.T, labels)  # axis=0: down each column, a caption picks its image
    loss_t = F.cross_entropy(logits, labels)  # axis=1: along each row, an image picks its caption
    return (loss_i + loss_t) / 2


@torch.no_grad()
def clamp_logit_scale_(model: open_clip.CLIP, max_value: float = MAX_LOGIT_SCALE) -> None:
    """Keep the temperature in CLIP's range, ``0 <= t <= ln 100``, in place (after each step)."""
    model.logit_scale.clamp_(0, max_value)


_TRAINING_NAMES = {"TrainedTinyClip", "TrainingMetrics", "train_tiny_clip", "load_or_train_tiny_clip"}


def __getattr__(name: str):
    # The training half imports this module, so it is loaded lazily, on first use of one of its names.
    if name in _TRAINING_NAMES:
        from course_lib import tiny_clip_training
        return getattr(tiny_clip_training, name)
    raise AttributeError(f"module 'course_lib.tiny_clip' has no attribute {name!r}")
