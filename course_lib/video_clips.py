"""Synthetic video clips of moving shapes, and a task that needs time: which way does a shape move?

Frames are drawn with ``shapes_data.render_objects``, the drawing function of the images tiny CLIP
was trained on (lesson 02), so its image encoder sees the kind of picture it knows. A clip is a
list of :class:`MovingShape` (a start, a velocity, an appearance time, bouncing off the edges or
not) rendered at the frame times ``t = index / fps``.

The temporal task, "does the shape move left or right?", is built so that **no single frame can
answer it**: a left-moving clip shows exactly the frames of a right-moving clip played backwards,

    x_right(t) = c + L (t - 1/2),     x_left(t) = c - L (t - 1/2) = x_right(1 - t)      t in [0, 1]

and the sampled times are symmetric about 1/2, so the two classes have the same *set* of frames.
An image model on one frame, or on the average of all frames, is at chance (50 %) whatever it
learns; only a model that knows the frames' order can beat it. That is the job of the time
embeddings in ``course_lib.video.PerceiverResampler``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from course_lib.runtime import cache_dir
from course_lib.shapes_data import ALL_COMBINATIONS, SIZES, SceneObject, render_objects
from course_lib.video import ResamplerConfig, TemporalAggregator
from course_lib.video_io import write_video

DIRECTIONS = ("left", "right")  # label 0: the shape moves to the left, label 1: to the right


@dataclass(frozen=True)
class MovingShape:
    """A shape of ``shapes_data`` in motion; positions are fractions of the image side, (0, 0) = top left."""

    shape: str  # "circle", "square", "triangle" or "cross"
    colour: str  # one of shapes_data.COLOURS
    size: str  # "small" or "large"
    start: tuple[float, float]  # (x, y) of the centre at time 0
    velocity: tuple[float, float] = (0.0, 0.0)  # (vx, vy) in image sides per second
    appear: float = 0.0  # the time (seconds) it appears; invisible before
    bounce: bool = False  # reflect off the edges (else it may leave the canvas)

    def at(self, time: float) -> SceneObject | None:
        """Where it is at ``time`` seconds, as a drawable object, or ``None`` before it appears."""
        if time < self.appear:
            return None
        x, y = (s + v * time for s, v in zip(self.start, self.velocity))
        if self.bounce:  # a wall at each edge: fold the straight path back inside
            radius = SIZES[self.size]
            x, y = _reflect(x, radius, 1 - radius), _reflect(y, radius, 1 - radius)
        return SceneObject(self.shape, self.colour, self.size, x, y)


def _reflect(position: float, low: float, high: float) -> float:
    """A straight path folded into ``[low, high]``, as a ball bouncing between two walls."""
    span = high - low
    along = (position - low) % (2 * span)  # distance travelled along a there-and-back round trip
    return low + (along if along <= span else 2 * span - along)


def render_clip(shapes: list[MovingShape], times: list[float] | torch.Tensor, image_size: int = 32) -> torch.Tensor:
    """Draw ``shapes`` at each of ``times`` (seconds): ``(T, 3, H, W)`` float32 in [0, 1]."""
    frames = []
    for time in (times.tolist() if isinstance(times, torch.Tensor) else times):
        visible = [obj for obj in (shape.at(time) for shape in shapes) if obj is not None]
        frames.append(render_objects(visible, image_size))  # (3, H, W)
    return torch.stack(frames)  # (T, 3, H, W)


DEMO_SHAPES = [  # a bouncing ball, a square sliding right, a triangle that appears after 6 s
    MovingShape("circle", "red", "large", start=(0.3, 0.3), velocity=(0.23, 0.17), bounce=True),
    MovingShape("square", "blue", "small", start=(0.1, 0.8), velocity=(0.08, 0.0)),
    MovingShape("triangle", "yellow", "small", start=(0.75, 0.2), appear=6.0),
]


def make_demo_clip(num_frames: int = 240, fps: int = 24, keyframe_interval: int = 12,
                   image_size: int = 32, folder: Path | None = None) -> Path:
    """The lesson's demo clip as an H.264 mp4, written once into the cache and reused.

    Args:
        num_frames: T (240 frames at 24 fps = 10 s).
        fps: frames per second.
        keyframe_interval: frames between keyframes.
        image_size: H = W.
        folder: where to write it; ``cache_dir() / "video"`` by default.

    Returns:
        The path of the mp4 file.
    """
    folder = Path(folder) if folder is not None else cache_dir() / "video"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"demo_{num_frames}f_{fps}fps_key{keyframe_interval}_{image_size}px.mp4"
    if not path.exists():
        frames = render_clip(DEMO_SHAPES, [index / fps for index in range(num_frames)], image_size)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.mp4")  # renamed when whole: never half a file
        write_video(partial, frames, fps, keyframe_interval)
        partial.replace(path)
    return path


# ------------------------------------------------------------------------------------------------
# The temporal task


@dataclass
class DirectionDataset:
    """Clips of one shape crossing the image horizontally, left or right."""

    frames: torch.Tensor  # (B, T, 3, H, W) float32 in [0, 1], T frames sampled uniformly in time
    labels: torch.Tensor  # (B,) int64: 0 = moves left, 1 = moves right (DIRECTIONS)
    shapes: list[MovingShape]  # what each clip shows

    def __len__(self) -> int:
        return len(self.shapes)


def make_direction_dataset(num_clips: int, num_frames: int = 64, seed: int = 0,
                           image_size: int = 32, progress: bool = False) -> DirectionDataset:
    """Clips of a random shape moving left or right across the middle of the image (seeded).

    Each clip lasts 1 s; its ``num_frames`` frames are drawn at the centres of equal segments, the
    times :func:`course_lib.video.sample_frame_indices` picks, ``t_i = (i + 1/2) / num_frames``.
    The path is centred on ``c ~ U(0.4, 0.6)`` with length ``L ~ U(0.45, 0.6)``; labels are balanced.
    """
    rng = np.random.default_rng(seed)
    times = [(index + 0.5) / num_frames for index in range(num_frames)]  # symmetric about 1/2
    labels = rng.permutation(np.arange(num_clips) % 2)  # half left, half right
    shapes, clips = [], []
    for label in tqdm(labels, desc="rendering clips", disable=not progress):
        colour, shape = ALL_COMBINATIONS[rng.integers(len(ALL_COMBINATIONS))]
        size = ("small", "large")[rng.integers(2)]
        centre, length, y = rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.7)
        speed = length if label == 1 else -length  # image sides per second
        moving = MovingShape(shape, colour, size, start=(centre - speed / 2, y), velocity=(speed, 0.0))
        shapes.append(moving)
        clips.append(render_clip([moving], times, image_size))  # (T, 3, H, W)
    return DirectionDataset(torch.stack(clips), torch.as_tensor(labels, dtype=torch.int64), shapes)


@torch.no_grad()
def encode_frames(model: nn.Module, frames: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-frame features from an image encoder (``model.encode_image``), L2-normalised as in CLIP.

    Args:
        model: anything with ``encode_image((B, 3, H, W)) -> (B, D)``, e.g. tiny CLIP.
        frames: ``(..., 3, H, W)``, e.g. ``(T, 3, H, W)`` for one clip or ``(B, T, 3, H, W)``.
        batch_size: frames per forward pass.

    Returns:
        ``(..., D)``: one feature vector per frame.
    """
    *leading, C, H, W = frames.shape
    flat = frames.reshape(-1, C, H, W)  # (B*T, 3, H, W): every frame is just an image
    features = torch.cat([model.encode_image(chunk) for chunk in flat.split(batch_size)])  # (B*T, D)
    features = features / features.norm(dim=-1, keepdim=True)
    return features.reshape(*leading, -1)  # (..., D)


class FrameClassifier(nn.Module):
    """The image model: a small MLP on the features of a single frame ``(B, D)``."""

    def __init__(self, dim: int, num_classes: int = 2, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        return self.mlp(frame_features)  # (B, D) -> (B, K)


class VideoClassifier(nn.Module):
    """Frames -> temporal aggregator -> average of its tokens -> class scores."""

    def __init__(self, config: ResamplerConfig, num_classes: int = 2, frames_per_group: int = 32):
        super().__init__()
        self.aggregator = TemporalAggregator(config, frames_per_group)
        self.head = nn.Linear(config.dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        aggregated = self.aggregator(features)  # (B, T, D) -> (B, G, L, D)
        return self.head(aggregated.mean(dim=(1, 2)))  # (B, D) -> (B, K)


def train_classifier(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int = 300,
                     lr: float = 3e-3, batch_size: int = 64, seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``model`` with Adam on cross-entropy, showing a progress bar; returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=f"training {type(model).__name__}", disable=not progress)
    for _ in bar:
        batch = torch.randint(len(inputs), (batch_size,), generator=generator)  # (batch,)
        loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``inputs`` whose highest score is the right label."""
    model.eval()
    return (model(inputs).argmax(dim=-1) == labels).float().mean().item()


def single_frame_features(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One frame per clip, chosen at random (seeded): ``(B, T, D) -> (B, D)``, what an image model sees."""
    B, T, D = features.shape
    picks = torch.randint(T, (B,), generator=torch.Generator().manual_seed(seed))  # (B,)
    return features[torch.arange(B), picks]  # (B, D)

