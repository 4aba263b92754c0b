"""Synthetic captioned images: coloured shapes on a dark canvas, each with its scene description.

CLIP learns from (image, caption) pairs scraped from the web (Radford et al., 2021); a laptop CPU
cannot. This module makes a small world instead, where every image comes with the exact facts it
shows, so that its caption, and any question about it with its answer, can be written from them:

    "two small red circles on the left"   <->   Scene(colour="red", shape="circle", size="small",
                                                      count=2, position="left", centres=(...))

The attributes (a scene's objects are all alike; its metadata is the :class:`Scene` dataclass):

    colour    red, green, blue, yellow, purple, orange       (COLOURS)
    shape     circle, square, triangle, cross                  (SHAPES)
    size      small, large                                     (SIZES)
    count     1, 2, 3                                          (COUNTS)
    position  left, right, top, bottom: the half of the image the objects are in   (POSITIONS)

Held-out combinations. Six of the 24 (colour, shape) pairs never appear in the training split,
although each of their colours and shapes does, with other partners (``HELDOUT_COMBINATIONS``):

             circle  square  triangle  cross
    red        .       .        .        H
    green      .       H        .        .
    blue       H       .        .        .
    yellow     .       .        H        .
    purple     .       .        H        .
    orange     .       H        .        .

``split="train"`` draws from the 18 other pairs, ``split="heldout"`` only from the 6 held-out ones
(lesson 03 asks whether CLIP recognises "a purple triangle" it has never seen), ``split="all"`` from
all 24.

Images are ``(B, 3, H, W)`` float32 in [0, 1] (H = W = ``image_size``, 32 by default); the tiny CLIP
takes them as they are, with no further normalisation. Everything is deterministic: scenes come from
``numpy.random.default_rng(seed)``, and pixels are averaged over 4 x 4 sub-pixels (antialiasing),
then rounded to 8-bit levels (k/255), so the same seed gives the same tensors on any machine.

Public interface (later lessons rely on it):

    make_dataset(num_images, split="train", seed=0, image_size=32) -> ShapesDataset
        .images (B, 3, H, W) float32, .scenes list[Scene], .captions list[str]
    Scene(colour, shape, size, count, position, centres)      .combination, .objects, .mirrored()
    caption(scene, with_colour=True) -> "two small red circles on the left"
    make_scene(colour, shape, size="large", count=1, position="left", seed=0) -> Scene
    sample_scene(rng, split) -> Scene
    SceneObject(shape, colour, size, x, y)    one shape anywhere; x, y fractions of the side
    render_objects(objects, image_size=32) -> (3, H, W)      draws any objects (video frames)
    render_scene(scene, image_size=32) -> (3, H, W)
    COLOURS, SHAPES, SIZES, COUNTS, POSITIONS, COUNT_WORDS, POSITION_PHRASES, PLURALS, BACKGROUND
    ALL_COMBINATIONS, TRAIN_COMBINATIONS, HELDOUT_COMBINATIONS, DATA_VERSION

Drawing is separate from sampling: :func:`render_objects` draws any list of :class:`SceneObject`
at any positions (lesson 05 moves them to make video frames), and :func:`render_scene` draws a
:class:`Scene`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

COLOURS: dict[str, tuple[float, float, float]] = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.35, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.62, 0.22, 0.85),
    "orange": (1.00, 0.55, 0.05),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.12, "large": 0.16}  # name -> radius, as a fraction of the image side
COUNTS: tuple[int, ...] = (1, 2, 3)
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
BACKGROUND = 0.08  # grey level of the empty canvas
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

ALL_COMBINATIONS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
HELDOUT_COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("red", "cross"), ("green", "square"), ("blue", "circle"),
    ("yellow", "triangle"), ("purple", "triangle"), ("orange", "square"),
)
TRAIN_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(
    pair for pair in ALL_COMBINATIONS if pair not in HELDOUT_COMBINATIONS)
Split = Literal["train", "heldout", "all"]
SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": TRAIN_COMBINATIONS, "heldout": HELDOUT_COMBINATIONS, "all": ALL_COMBINATIONS}

# Bump when drawing or sampling changes, so that models cached on the old data are retrained.
DATA_VERSION = 2


@dataclass(frozen=True)
class SceneObject:
    """One shape on the canvas; coordinates are fractions of the image side, (0, 0) = top left."""

    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    x: float  # centre, from 0 (left edge) to 1 (right edge)
    y: float  # centre, from 0 (top edge) to 1 (bottom edge)


@dataclass(frozen=True)
class Scene:
    """What one image shows: ``count`` alike objects in one half of the image."""

    colour: str  # one of COLOURS
    shape: str  # one of SHAPES
    size: str  # one of SIZES
    count: int  # one of COUNTS
    position: str  # one of POSITIONS: the half of the image that holds every object
    centres: tuple[tuple[float, float], ...]  # (x, y) of each object, fractions of the image side

    @property
    def combination(self) -> tuple[str, str]:
        """The (colour, shape) pair, the unit of the train / held-out split."""
        return (self.colour, self.shape)

    @property
    def objects(self) -> tuple[SceneObject, ...]:
        return tuple(SceneObject(self.shape, self.colour, self.size, x, y) for x, y in self.centres)

    def mirrored(self) -> Scene:
        """The scene flipped left to right: what ``image.flip(-1)`` shows (our four shapes are symmetric)."""
        position = {"left": "right", "right": "left"}.get(self.position, self.position)
        return Scene(self.colour, self.shape, self.size, self.count, position,
                     tuple((round(1 - x, 4), y) for x, y in self.centres))


def caption(scene: Scene, with_colour: bool = True) -> str:
    """The scene in words, every attribute named: ``"two small red circles on the left"``.

    ``with_colour=False`` leaves the colour out (``"two small circles on the left"``), the caption
    of a grey copy of the image.
    """
    noun = scene.shape if scene.count == 1 else PLURALS[scene.shape]
    colour = f"{scene.colour} " if with_colour else ""
    return f"{COUNT_WORDS[scene.count]} {scene.size} {colour}{noun} {POSITION_PHRASES[scene.position]}"


def _validate_scene_values(colour: str, shape: str, size: str, count: int, position: str) -> None:
    for name, value, allowed in (("colour", colour, tuple(COLOURS)), ("shape", shape, SHAPES),
                                 ("size", size, tuple(SIZES)), ("count", count, COUNTS),
                                 ("position", position, POSITIONS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, allowed))}")


def _region(position: str, radius: float) -> tuple[float, float, float, float]:
    """The box (x_min, x_max, y_min, y_max) where a centre may go so the object stays in its half."""
    low, mid, high = radius, 0.5 - radius, 1.0 - radius
    return {"left": (low, mid, low, high), "right": (0.5 + radius, high, low, high),
            "top": (low, high, low, mid), "bottom": (low, high, 0.5 + radius, high)}[position]


def place_objects(rng: np.random.Generator, count: int, size: str, position: str) -> tuple[tuple[float, float], ...]:
    """Random centres for ``count`` objects inside the ``position`` half, none overlapping.

    The half is cut along its long side into ``count`` equal slots, one object per slot, each
    jittered at random inside its slot: objects never overlap, and counting them stays easy.
    Uses only ``rng``, so it is as deterministic as the seed.
    """
    radius = SIZES[size]
    x_min, x_max, y_min, y_max = _region(position, radius)
    vertical = position in ("left", "right")  # a left/right half is tall: stack the objects top to bottom
    long_min, long_max = (y_min, y_max) if vertical else (x_min, x_max)
    slot = (long_max - long_min + 2 * radius) / count  # each slot must hold one whole object
    if slot < 2 * radius:
        raise ValueError(f"{count} {size} objects do not fit {POSITION_PHRASES[position]}")
    centres = []
    for index in range(count):
        start = long_min + index * slot  # the lowest centre that keeps the object inside its slot
        along = float(rng.uniform(start, start + slot - 2 * radius))
        across = float(rng.uniform(x_min, x_max) if vertical else rng.uniform(y_min, y_max))
        x, y = (across, along) if vertical else (along, across)
        centres.append((round(x, 4), round(y, 4)))
    return tuple(centres)


def make_scene(colour: str, shape: str, size: str = "large", count: int = 1, position: str = "left",
               seed: int = 0) -> Scene:
    """A scene with the given attributes, its objects placed at random (seeded).

    Example:
        >>> caption(make_scene("purple", "triangle", "small", 2, "top"))
        'two small purple triangles at the top'
    """
    _validate_scene_values(colour, shape, size, count, position)
    centres = place_objects(np.random.default_rng(seed), count, size, position)
    return Scene(colour, shape, size, count, position, centres)


def sample_scene(rng: np.random.Generator, split: Split = "train") -> Scene:
    """A random scene whose (colour, shape) pair belongs to ``split``; every other attribute uniform."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    combinations = SPLITS[split]
    colour, shape = combinations[rng.integers(len(combinations))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    count = COUNTS[rng.integers(len(COUNTS))]
    position = POSITIONS[rng.integers(len(POSITIONS))]
    return Scene(colour, shape, size, count, position, place_objects(rng, count, size, position))


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Which points (offsets dx, dy from the centre; y grows downwards) lie inside the shape."""
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "square":
        half = 0.9 * radius  # nearly as wide as the circle, so its corners stick out even when small
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # pointing up, base at y = +0.8 r, apex at y = -r
        base, apex = 0.8 * radius, -1.05 * radius
        half_width = 1.05 * radius * (dy - apex) / (base - apex)  # widens linearly from apex to base
        return (dy >= apex) & (dy <= base) & (np.abs(dx) <= half_width)
    if shape == "cross":
        arm, half_thickness = radius, 0.33 * radius
        return (((np.abs(dx) <= arm) & (np.abs(dy) <= half_thickness))
                | ((np.abs(dy) <= arm) & (np.abs(dx) <= half_thickness)))
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def render_objects(objects: Sequence[SceneObject], image_size: int = 32, supersample: int = 4,
                   background: float = BACKGROUND) -> torch.Tensor:
    """Draw objects on an empty canvas, later ones on top, with antialiased edges.

    Each pixel is split into ``supersample x supersample`` sub-pixels; the pixel's colour is the
    average over its sub-pixels, so an edge crossing a pixel blends smoothly.

    Args:
        objects: what to draw, at any positions (partly outside the canvas is fine).
        image_size: H = W in pixels.
        supersample: sub-pixels per pixel side (1 = hard, aliased edges).
        background: grey level of the empty canvas.

    Returns:
        ``(3, H, W)`` float32 image in [0, 1].

    Example:
        >>> render_objects([SceneObject("circle", "red", "large", 0.5, 0.5)], image_size=16).shape
        torch.Size([3, 16, 16])
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    S = image_size * supersample
    coords = (np.arange(S) + 0.5) / S  # sub-pixel centres, fractions of the side, (S,)
    canvas = np.full((S, S, 3), background, dtype=np.float64)  # (S, S, 3), channels last while drawing
    for obj in objects:
        if obj.colour not in COLOURS:
            raise ValueError(f"unknown colour {obj.colour!r}; choose one of {', '.join(COLOURS)}")
        if obj.size not in SIZES:
            raise ValueError(f"unknown size {obj.size!r}; choose one of {', '.join(SIZES)}")
        radius = SIZES[obj.size]
        # Only the sub-pixels in the object's bounding box can be inside it: test those alone.
        rows = slice(*np.searchsorted(coords, [obj.y - 1.1 * radius, obj.y + 1.1 * radius]))
        cols = slice(*np.searchsorted(coords, [obj.x - 1.1 * radius, obj.x + 1.1 * radius]))
        dy, dx = np.meshgrid(coords[rows] - obj.y, coords[cols] - obj.x, indexing="ij")  # (h, w) each
        mask = _inside(obj.shape, dx, dy, radius)  # (h, w) bool
        canvas[rows, cols][mask] = COLOURS[obj.colour]
    pixels = canvas.reshape(image_size, supersample, image_size, supersample, 3).mean(axis=(1, 3))  # (H, W, 3)
    pixels = np.round(pixels * 255) / 255  # 8-bit levels, like a real image: identical on every machine
    return torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1).contiguous()  # (3, H, W)  # (3, H, W)


def render_scene(scene: Scene, image_size: int = 32, supersample: int = 4) -> torch.Tensor:
    """Draw a :class:`Scene`: ``(3, H, W)`` float32 in [0, 1]."""
    return render_objects(scene.objects, image_size, supersample)


@dataclass
class ShapesDataset:
    """A batch of generated images with their scenes and captions, all index-aligned."""

    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    scenes: list[Scene]  # what each image shows
    captions: list[str]  # caption(scene) for each image
    split: str  # "train", "heldout" or "all"
    seed: int  # the seed that made it

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.images[index], self.captions[index]


def make_dataset(num_images: int, split: Split = "train", seed: int = 0, image_size: int = 32) -> ShapesDataset:
    """Generate ``num_images`` captioned scenes of ``split``, deterministically from ``seed``.

    Use different seeds for training and test sets (e.g. 0 and 1): two seeds give independent scenes.

    Args:
        num_images: B, how many images.
        split: ``"train"`` (the 18 seen colour-shape pairs), ``"heldout"`` (the 6 held-out pairs)
            or ``"all"`` (all 24).
        seed: the random seed; the same seed gives the same tensors.
        image_size: H = W in pixels.

    Returns:
        A :class:`ShapesDataset` with ``images`` of shape ``(B, 3, H, W)`` float32 in [0, 1].

    Example:
        >>> data = make_dataset(4, "heldout", seed=1)
        >>> data.images.shape, data.scenes[0].combination in HELDOUT_COMBINATIONS
        (torch.Size([4, 3, 32, 32]), True)
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images <= 0:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, split) for _ in range(num_images)]
    images = torch.stack([render_scene(scene, image_size) for scene in scenes])  # (B, 3, H, W)
    return ShapesDataset(images, scenes, [caption(scene) for scene in scenes], split, seed)
