"""shapes_data: shapes and ranges, determinism, the held-out split, captions, drawing, bad input."""

import numpy as np
import pytest
import torch

from course_lib import shapes_data
from course_lib.shapes_data import (ALL_COMBINATIONS, COLOURS, HELDOUT_COMBINATIONS, SHAPES, TRAIN_COMBINATIONS,
                                    Scene, SceneObject, caption, make_dataset, make_scene, render_objects,
                                    render_scene)


def test_images_are_float_in_unit_range_with_metadata():
    data = make_dataset(12, "all", seed=0)
    assert data.images.shape == (12, 3, 32, 32)
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert len(data.scenes) == len(data.captions) == len(data) == 12
    assert all(isinstance(scene, Scene) for scene in data.scenes)
    assert data.captions == [caption(scene) for scene in data.scenes]
    image, text = data[3]
    assert image.shape == (3, 32, 32) and text == data.captions[3]


def test_other_image_sizes():
    assert make_dataset(2, seed=0, image_size=64).images.shape == (2, 3, 64, 64)


def test_same_seed_same_tensors_other_seed_other_tensors():
    first, second = make_dataset(16, "train", seed=7), make_dataset(16, "train", seed=7)
    assert torch.equal(first.images, second.images)
    assert first.scenes == second.scenes
    assert not torch.equal(first.images, make_dataset(16, "train", seed=8).images)


def test_pixels_are_exact_8_bit_levels():
    # rounding to k/255 makes the tensors identical across machines despite float summation order
    images = make_dataset(4, seed=0).images
    assert torch.equal(images, torch.round(images * 255) / 255)


def test_split_is_a_partition_with_every_colour_and_shape_seen():
    assert set(TRAIN_COMBINATIONS) | set(HELDOUT_COMBINATIONS) == set(ALL_COMBINATIONS)
    assert not set(TRAIN_COMBINATIONS) & set(HELDOUT_COMBINATIONS)
    assert len(ALL_COMBINATIONS) == len(COLOURS) * len(SHAPES)
    assert {c for c, _ in TRAIN_COMBINATIONS} == set(COLOURS)
    assert {s for _, s in TRAIN_COMBINATIONS} == set(SHAPES)


def test_heldout_combinations_never_appear_in_training_data():
    train = make_dataset(2000, "train", seed=0)
    seen = {scene.combination for scene in train.scenes}
    assert seen == set(TRAIN_COMBINATIONS)  # all 18, and nothing else
    heldout = make_dataset(200, "heldout", seed=2)
    assert {scene.combination for scene in heldout.scenes} == set(HELDOUT_COMBINATIONS)
    for colour, shape in HELDOUT_COMBINATIONS:
        assert not any(f"{colour} {shape}" in text for text in train.captions)


def test_mirrored_scene_is_the_flipped_image():
    scene = make_scene("red", "triangle", "small", 2, "left", seed=3)
    assert scene.mirrored().position == "right"
    assert torch.equal(render_scene(scene).flip(-1), render_scene(scene.mirrored()))
    top = make_scene("blue", "cross", "large", 3, "top")
    assert caption(top.mirrored()) == caption(top)


def test_caption_examples():
    scene = make_scene("purple", "triangle", "small", 2, "top")
    assert caption(scene) == "two small purple triangles at the top"
    assert caption(scene, with_colour=False) == "two small triangles at the top"
    assert caption(make_scene("red", "cross", "large", 1, "left")) == "one large red cross on the left"


def test_objects_stay_in_their_half_and_do_not_overlap():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = shapes_data.sample_scene(rng, "all")
        radius = shapes_data.SIZES[scene.size]
        assert len(scene.centres) == scene.count
        for x, y in scene.centres:
            assert radius - 1e-4 <= x <= 1 - radius + 1e-4 and radius - 1e-4 <= y <= 1 - radius + 1e-4
            inside = {"left": x <= 0.5 - radius + 1e-4, "right": x >= 0.5 + radius - 1e-4,
                      "top": y <= 0.5 - radius + 1e-4, "bottom": y >= 0.5 + radius - 1e-4}[scene.position]
            assert inside, scene
        for i, (x1, y1) in enumerate(scene.centres):
            for x2, y2 in scene.centres[i + 1:]:
                assert np.hypot(x1 - x2, y1 - y2) >= 2 * radius - 1e-3


def test_drawn_colour_and_position_match_the_scene():
    scene = make_scene("blue", "square", "large", 1, "right", seed=3)
    image = render_scene(scene)  # (3, H, W)
    x, y = scene.centres[0]
    centre_pixel = image[:, int(y * 32), int(x * 32)]
    assert torch.allclose(centre_pixel, torch.tensor(COLOURS["blue"]), atol=1 / 255)
    assert image[:, :, :16].max() == pytest.approx(shapes_data.BACKGROUND, abs=1 / 255)  # left half empty


def test_shapes_differ_in_pixels():
    drawings = [render_objects([SceneObject(shape, "red", "large", 0.5, 0.5)]) for shape in SHAPES]
    for i in range(len(SHAPES)):
        for j in range(i + 1, len(SHAPES)):
            assert (drawings[i] - drawings[j]).abs().sum() > 5, (SHAPES[i], SHAPES[j])


def test_render_objects_for_video_frames():
    # lesson 05 moves objects from frame to frame; partly outside the canvas is allowed
    frames = [render_objects([SceneObject("circle", "green", "small", x, 0.5)], image_size=32)
              for x in (0.0, 0.5, 1.0)]
    assert all(frame.shape == (3, 32, 32) for frame in frames)
    assert not torch.equal(frames[0], frames[1])


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        make_dataset(4, "test")
    with pytest.raises(ValueError, match="num_images must be a positive int"):
        make_dataset(0)
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        make_scene("pink", "circle")
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        render_objects([SceneObject("star", "red", "small", 0.5, 0.5)])
    with pytest.raises(ValueError, match="unknown count 4"):
        make_scene("red", "circle", count=4)
    with pytest.raises(ValueError, match="image_size must be at least 8"):
        render_objects([], image_size=4)
