"""Video for a vision-language model: sample frames, encode each, aggregate time with a Perceiver.

Lecture: "Llama 3.2 - Video processing":

    1. take up to 64 uniformly sampled frames from the full video;
    2. run each frame through the image encoder;
    3. a temporal aggregator, a Perceiver resampler, merges 32 consecutive frames into one.

Frame sampling (step 1) is three small pure functions here, one per strategy met in practice:
``sample_frame_indices`` (uniform, Llama 3's), ``sample_frame_indices_fixed_fps`` (so many frames
per second of video) and ``sample_frame_indices_random`` (a random frame in each segment, a cheap
augmentation for training; Wang et al., "Temporal Segment Networks", ECCV 2016). Reading the frames
from a compressed file is ``course_lib.video_io``.

The Perceiver resampler (Alayrac et al., "Flamingo", NeurIPS 2022, section 3.1.1 and appendix A.1.1;
Jaegle et al., "Perceiver", ICML 2021) turns any number of frame features into a fixed number of
``num_latents`` vectors. Learned latents ask the questions, the frames answer:

    media = flatten_{T, N}(media + time_embedding[t])                     (T*N, D)
    for each layer:
        latents = latents + Attention(q = latents, kv = concat(media, latents))
        latents = latents + FeedForward(latents)
    return LayerNorm(latents)                                              (num_latents, D)

Attention alone ignores order (it sees a *set* of keys); the time embeddings are what tell frame 3
from frame 30. ``TemporalAggregator`` cuts the frames into groups of 32 consecutive ones and
resamples each group into one "aggregated frame" of ``num_latents`` tokens (Llama 3, arXiv
2407.21783, section 7.2). lucidrains/flamingo-pytorch keeps a time axis and resamples each frame on
its own; we follow the paper's pseudo-code, where the latents see every frame of their group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

# ------------------------------------------------------------------------------------------------
# Frame sampling: which frames of a T-frame video to decode


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def sample_frame_indices(num_frames: int, num_samples: int = 64) -> list[int]:
    """Up to ``num_samples`` frame indices spread uniformly over ``[0, num_frames)``.

    Cut the video into ``num_samples`` equal segments and take the frame at the centre of each:

        index_i = floor((i + 1/2) * num_frames / num_samples),   i = 0 .. num_samples - 1

    Consecutive indices differ by ``floor`` or ``ceil`` of ``num_frames / num_samples`` (at least 1,
    so they strictly increase). A video shorter than ``num_samples`` gives all its frames.

    Args:
        num_frames: T, frames in the video (positive).
        num_samples: how many to take at most (positive); Llama 3 uses 64.

    Returns:
        ``min(num_frames, num_samples)`` strictly increasing ints in ``[0, num_frames)``.

    Example:
        >>> sample_frame_indices(100, 4)
        [12, 37, 62, 87]
        >>> sample_frame_indices(3, 64)
        [0, 1, 2]
    """
    _check_count("num_frames", num_frames)
    _check_count("num_samples", num_samples)
    if num_frames <= num_samples:
        return list(range(num_frames))
    # Integer arithmetic: (2i + 1) * T // (2S) is the centre of segment i, exactly, for any T and S.
    return [(2 * i + 1) * num_frames // (2 * num_samples) for i in range(num_samples)]


def sample_frame_indices_fixed_fps(num_frames: int, video_fps: float, sample_fps: float,
                                   max_samples: int | None = None) -> list[int]:
    """One frame every ``1 / sample_fps`` seconds: the count grows with the video's length.

        index_k = floor(k * video_fps / sample_fps),   k = 0, 1, ... while index_k < num_frames

    Args:
        num_frames: T, frames in the video.
        video_fps: the video's frame rate.
        sample_fps: frames to take per second of video (at most ``video_fps``).
        max_samples: cap the count; if the video needs more, fall back to uniform sampling.

    Returns:
        Strictly increasing ints in ``[0, num_frames)``.

    Example:
        >>> sample_frame_indices_fixed_fps(100, video_fps=25, sample_fps=1)
        [0, 25, 50, 75]
    """
    _check_count("num_frames", num_frames)
    if not 0 < sample_fps <= video_fps:
        raise ValueError(f"sample_fps must be in (0, video_fps = {video_fps}], got {sample_fps}")
    step = video_fps / sample_fps  # video frames between two samples, >= 1
    indices = [int(k * step) for k in range(math.ceil(num_frames / step)) if int(k * step) < num_frames]
    if max_samples is not None and len(indices) > max_samples:
        return sample_frame_indices(num_frames, max_samples)
    return indices


def sample_frame_indices_random(num_frames: int, num_samples: int = 64,
                                generator: torch.Generator | None = None) -> list[int]:
    """A random frame inside each of ``num_samples`` equal segments (training-time augmentation).

    Segment ``i`` is ``[floor(i * T / S), floor((i + 1) * T / S))``; the segments do not overlap, so
    the indices strictly increase, and every part of the video is still covered.

    Args:
        num_frames: T, frames in the video.
        num_samples: S, how many to take at most.
        generator: a seeded ``torch.Generator`` for reproducible draws.

    Returns:
        ``min(T, S)`` strictly increasing ints in ``[0, T)``; all frames when ``T <= S``.
    """
    _check_count("num_frames", num_frames)
    _check_count("num_samples", num_samples)
    if num_frames <= num_samples:
        return list(range(num_frames))
    starts = [i * num_frames // num_samples for i in range(num_samples + 1)]  # segment borders
    offsets = torch.rand(num_samples, generator=generator)  # (S,) in [0, 1)
    return [start + int(offset * (end - start)) for start, end, offset in zip(starts, starts[1:], offsets.tolist())]


# ------------------------------------------------------------------------------------------------
# The Perceiver resampler and the temporal aggregator


@dataclass
class ResamplerConfig:
    """Sizes of a Perceiver resampler; the defaults fit tiny CLIP's features."""

    dim: int = 32  # D, width of the frame features and of the latents
    num_latents: int = 4  # tokens out per group of frames (Flamingo: 64)
    num_layers: int = 2  # attention + feed-forward blocks (Flamingo: 6)
    num_heads: int = 4  # attention heads
    head_dim: int = 16  # width of one head; num_heads * head_dim need not equal D
    ff_mult: int = 2  # hidden width of the feed-forward = ff_mult * D
    max_frames: int = 32  # frames a time embedding exists for
    time_embeddings: bool = True  # add a learned vector per frame position (False: order-blind)


class PerceiverAttention(nn.Module):
    """Latents attend to ``concat(media, latents)``; separate LayerNorms for media and latents."""

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        inner = config.num_heads * config.head_dim
        self.num_heads = config.num_heads
        self.norm_media = nn.LayerNorm(config.dim)
        self.norm_latents = nn.LayerNorm(config.dim)
        self.to_q = nn.Linear(config.dim, inner, bias=False)
        self.to_kv = nn.Linear(config.dim, 2 * inner, bias=False)  # keys and values in one matmul
        self.to_out = nn.Linear(inner, config.dim, bias=False)

    def forward(self, latents: torch.Tensor, media: torch.Tensor,
                media_mask: torch.Tensor | None = None) -> torch.Tensor:
        """latents ``(B, L, D)``, media ``(B, M, D)``, media_mask ``(B, M)`` bool (True = real) -> ``(B, L, D)``."""
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)  # (B, L, h*d): only the latents ask
        kv_input = torch.cat([media, latents], dim=1)  # (B, M + L, D): latents also see themselves
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)  # (B, M + L, h*d) each
        q, k, v = (rearrange(x, "b n (h d) -> b h n d", h=self.num_heads) for x in (q, k, v))  # (B, h, n, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, L, M + L)
        if media_mask is not None:  # padded frames get no attention; the latents' own keys are always real
            keep = torch.cat([media_mask, media_mask.new_ones(media_mask.shape[0], latents.shape[1])], dim=1)
            scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))  # (B, h, L, M + L)
        out = scores.softmax(dim=-1) @ v  # (B, h, L, d)
        return self.to_out(rearrange(out, "b h l d -> b l (h d)"))  # (B, L, D)


class PerceiverResampler(nn.Module):
    """Any number of frames (up to ``max_frames``) of N tokens each -> ``num_latents`` tokens."""

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.dim))  # (L, D), learned
        self.time_embedding = nn.Parameter(torch.zeros(config.max_frames, config.dim) if config.time_embeddings
                                           else torch.zeros(0, config.dim))  # (max_frames, D)
        nn.init.normal_(self.time_embedding, std=0.02)
        self.layers = nn.ModuleList(nn.ModuleList([
            PerceiverAttention(config),
            nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, config.ff_mult * config.dim, bias=False),
                          nn.GELU(), nn.Linear(config.ff_mult * config.dim, config.dim, bias=False)),
        ]) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, media: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Resample frame features.

        Args:
            media: ``(B, T, N, D)`` (N tokens per frame) or ``(B, T, D)`` (one per frame, N = 1).
            frame_mask: ``(B, T)`` bool, False for padding frames that must be ignored.

        Returns:
            ``(B, num_latents, D)``.
        """
        media = check_frame_features(media, self.config.dim)
        B, T, N, D = media.shape
        if T > self.config.max_frames:
            raise ValueError(f"got {T} frames but time embeddings exist for max_frames = "
                             f"{self.config.max_frames}; use a TemporalAggregator or raise max_frames")
        if self.config.time_embeddings:
            media = media + self.time_embedding[:T, None, :]  # (B, T, N, D): frame t gets vector t
        media = rearrange(media, "b t n d -> b (t n) d")  # (B, T*N, D): one set of tokens
        media_mask = None if frame_mask is None else repeat(frame_mask, "b t -> b (t n)", n=N)  # (B, T*N)
        latents = repeat(self.latents, "l d -> b l d", b=B)  # (B, L, D)
        for attention, feed_forward in self.layers:
            latents = latents + attention(latents, media, media_mask)  # (B, L, D)
            latents = latents + feed_forward(latents)  # (B, L, D)
        return self.norm(latents)  # (B, L, D)


class TemporalAggregator(nn.Module):
    """Merge every ``frames_per_group`` consecutive frames into one aggregated frame (Llama 3: 32).

    ``(B, T, D)`` or ``(B, T, N, D)`` -> ``(B, G, num_latents, D)`` with ``G = ceil(T / frames_per_group)``.
    A last, shorter group is padded, and the padding masked out of the attention.
    """

    def __init__(self, config: ResamplerConfig, frames_per_group: int = 32):
        super().__init__()
        if frames_per_group > config.max_frames:
            raise ValueError(f"frames_per_group {frames_per_group} exceeds config.max_frames "
                             f"{config.max_frames}; raise max_frames to at least {frames_per_group}")
        self.frames_per_group = frames_per_group
        self.resampler = PerceiverResampler(config)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = check_frame_features(features, self.resampler.config.dim)
        B, T, N, D = features.shape
        G = math.ceil(T / self.frames_per_group)
        padding = G * self.frames_per_group - T
        frame_mask = torch.arange(G * self.frames_per_group, device=features.device) < T  # (G*32,)
        features = nn.functional.pad(features, (0, 0, 0, 0, 0, padding))  # (B, G*32, N, D), zeros at the end
        groups = rearrange(features, "b (g t) n d -> (b g) t n d", g=G)  # (B*G, 32, N, D)
        group_mask = repeat(frame_mask, "(g t) -> (b g) t", g=G, b=B)  # (B*G, 32)
        aggregated = self.resampler(groups, group_mask if padding else None)  # (B*G, L, D)
        return rearrange(aggregated, "(b g) l d -> b g l d", b=B)  # (B, G, L, D)


def check_frame_features(features: torch.Tensor, dim: int) -> torch.Tensor:
    """``features`` as ``(B, T, N, D)``, after checking its type, rank and width."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"frame features must be a torch.Tensor (B, T, D) or (B, T, N, D), "
                        f"got {type(features).__name__}")
    if not torch.is_floating_point(features):
        raise TypeError(f"frame features must be floating point, got {features.dtype}; use features.float()")
    if features.dim() not in (3, 4):
        hint = "; add a batch axis with features.unsqueeze(0)" if features.dim() == 2 else ""
        raise ValueError(f"frame features must have shape (B, T, D) or (B, T, N, D), got "
                         f"{tuple(features.shape)} (rank {features.dim()}){hint}")
    if features.shape[-1] != dim:
        raise ValueError(f"frame features have width {features.shape[-1]} but the resampler expects "
                         f"D = {dim}; set ResamplerConfig(dim={features.shape[-1]})")
    if features.shape[1] == 0:
        raise ValueError(f"frame features have no frames (T = 0), shape {tuple(features.shape)}")
    return features if features.dim() == 4 else features.unsqueeze(2)  # (B, T, 1, D) for one token per frame
