"""tiny_clip: the loss against open_clip.ClipLoss, its invariants, the model, training, the cache, bad input."""

import dataclasses
import math
import warnings

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from course_lib import shapes_data, tiny_clip_training
from course_lib.patches import patchify
from course_lib.tiny_clip import (INIT_LOGIT_SCALE, TinyClipConfig, build_tiny_clip, clamp_logit_scale_,
                                  contrastive_loss, encode_images, encode_texts, get_tokenizer, tokenize)
from course_lib.tiny_clip_training import (UNNAMED_DISTANCE, CacheError, TrainedTinyClip, cache_path,
                                           colourless_colours, load_or_train_tiny_clip, load_trained, repaint,
                                           sample_batch, save_trained, train_tiny_clip)

torch.set_num_threads(1)  # tiny models: one thread is fastest, and robust on a busy machine

# A model small enough that a few training steps take a second.
TINY = TinyClipConfig(vision_width=32, vision_layers=1, text_width=32, text_heads=1, text_layers=1,
                      embed_dim=16, num_train_images=300, batch_size=32, steps=4, warmup_steps=2)


def unit_rows(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------------------------- loss

@pytest.mark.parametrize("batch_size", [1, 2, 7, 64])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_loss_equals_open_clip(batch_size, scale):
    images, texts = unit_rows(batch_size, 16, seed=batch_size), unit_rows(batch_size, 16, seed=batch_size + 100)
    expected = open_clip.ClipLoss()(images, texts, torch.tensor(scale))
    assert torch.allclose(contrastive_loss(images, texts, torch.tensor(scale)), expected, atol=1e-6)
    assert torch.allclose(contrastive_loss(images, texts, scale), expected, atol=1e-6)  # a float works too


def test_loss_gradients_equal_open_clip():
    images, texts = unit_rows(8, 16, seed=1).requires_grad_(), unit_rows(8, 16, seed=2).requires_grad_()
    ours = torch.autograd.grad(contrastive_loss(images, texts, 14.0), (images, texts))
    theirs = torch.autograd.grad(open_clip.ClipLoss()(images, texts, 14.0), (images, texts))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-7)


def test_loss_is_symmetric_in_images_and_texts():
    images, texts = unit_rows(10, 8, seed=3), unit_rows(10, 8, seed=4)
    assert torch.allclose(contrastive_loss(images, texts, 20.0), contrastive_loss(texts, images, 20.0))


def test_loss_is_invariant_to_shuffling_the_pairs_together():
    images, texts = unit_rows(10, 8, seed=5), unit_rows(10, 8, seed=6)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(contrastive_loss(images, texts, 20.0), contrastive_loss(images[order], texts[order], 20.0))


def test_loss_near_zero_for_aligned_well_separated_pairs_and_ln_n_for_identical_features():
    aligned = torch.eye(6)  # six orthogonal unit vectors, image i = text i
    assert contrastive_loss(aligned, aligned, 100.0).item() < 1e-6
    same = F.normalize(torch.ones(6, 4), dim=-1)  # every pair looks alike: the loss is ln n
    assert contrastive_loss(same, same, 100.0).item() == pytest.approx(math.log(6), abs=1e-5)


def test_loss_grows_when_captions_are_mismatched():
    features = unit_rows(8, 32, seed=7)
    assert contrastive_loss(features, features.roll(1, dims=0), 30.0) > contrastive_loss(features, features, 30.0)


def test_loss_bad_input():
    good = unit_rows(4, 8)
    with pytest.raises(ValueError, match="4 rows|row i of each"):
        contrastive_loss(good, unit_rows(3, 8), 10.0)
    with pytest.raises(ValueError, match="L2-normalised"):
        contrastive_loss(good * 3, good, 10.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        contrastive_loss(good[0], good[0], 10.0)
    with pytest.raises(ValueError, match="positive"):
        contrastive_loss(good, good, -1.0)


# ---------------------------------------------------------------------------------------------- model

def test_model_shapes_and_normalised_features():
    model, tokenizer = build_tiny_clip(TINY).eval(), get_tokenizer(TINY)
    images = shapes_data.make_dataset(3, seed=0).images
    with torch.no_grad():
        image_features = encode_images(model, images)
        text_features = encode_texts(model, tokenizer, ["one small red circle on the left", "two large blue squares"])
    assert image_features.shape == (3, TINY.embed_dim) and text_features.shape == (2, TINY.embed_dim)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(INIT_LOGIT_SCALE)
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_build_is_seeded_and_leaves_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_clip(TINY)
    after = torch.rand(1)
    assert torch.equal(before, after)
    second = build_tiny_clip(TINY)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_conv_stem_is_patchify_then_a_linear_map():
    model = build_tiny_clip(TINY)
    images = torch.rand(2, 3, 32, 32)
    P = TINY.patch_size
    conv = model.visual.conv1(images).flatten(2).transpose(1, 2)  # (B, N, D)
    weight = model.visual.conv1.weight  # (D, C, P, P); patchify flattens (P, P, C)
    linear = patchify(images, P) @ weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).T  # (B, N, D)
    assert torch.allclose(conv, linear, atol=1e-5)


def test_clamp_keeps_scale_at_most_100():
    model = build_tiny_clip(TINY)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_logit_scale_(model)
    assert model.logit_scale.exp().item() == pytest.approx(100.0)


def test_tokenize_bad_input():
    tokenizer = get_tokenizer(TINY)
    assert tokenize(tokenizer, "one small red circle on the left").shape == (1, TINY.context_length)
    with pytest.raises(ValueError, match="caption 1 is ''"):
        tokenize(tokenizer, ["a red circle", ""])
    with pytest.raises(ValueError, match="captions is empty"):
        tokenize(tokenizer, [])
    with pytest.raises(ValueError, match="needs .* tokens"):
        tokenize(tokenizer, "a very long caption " * 5)


def test_config_bad_values():
    with pytest.raises(ValueError, match="not divisible by patch_size 5"):
        TinyClipConfig(patch_size=5)
    with pytest.raises(ValueError, match="steps must be positive"):
        TinyClipConfig(steps=0)
    with pytest.raises(ValueError, match="colourless_fraction must be in"):
        TinyClipConfig(colourless_fraction=1.5)


def test_encode_images_wrong_size():
    with pytest.raises(ValueError, match=r"\(16, 16\) pixels but this model takes \(32, 32\)"):
        encode_images(build_tiny_clip(TINY), torch.rand(2, 3, 16, 16))


# ------------------------------------------------------------------------------------------- training

def test_batches_hold_no_caption_that_describes_another_image():
    data = shapes_data.make_dataset(400, "train", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        indices, grey = sample_batch(rng, data.scenes, 64, colourless_fraction=0.3)
        texts = [shapes_data.caption(data.scenes[i], with_colour=not g) for i, g in zip(indices, grey)]
        assert len(set(texts)) == len(texts)
        colourless = [shapes_data.caption(data.scenes[i], with_colour=False) for i in indices]
        for text, g in zip(texts, grey):
            if g:  # a colourless caption describes every scene with the same facts
                assert colourless.count(text) == 1
    with pytest.raises(ValueError, match="lower batch_size"):
        sample_batch(rng, data.scenes[:10], 64)


def test_repaint_keeps_the_drawing_and_changes_the_colour():
    data = shapes_data.make_dataset(6, "train", seed=0)
    colours = torch.tensor([shapes_data.COLOURS[scene.colour] for scene in data.scenes])  # (6, 3)
    assert torch.allclose(repaint(data.images, colours, colours), data.images, atol=3 / 255)
    green = torch.tensor(shapes_data.COLOURS["green"]).expand(6, 3)
    for scene, image in zip(data.scenes[:1], repaint(data.images[:1], colours[:1], green[:1])):
        expected = shapes_data.render_objects([dataclasses.replace(o, colour="green") for o in scene.objects])
        assert torch.allclose(image, expected, atol=3 / 255)


def test_colourless_copies_never_use_a_named_colour():
    # otherwise a repainted triangle could look like a held-out "purple triangle"
    named = torch.tensor(list(shapes_data.COLOURS.values()))
    old = named[torch.arange(200) % 6]  # (200, 3)
    new = colourless_colours(np.random.default_rng(0), old)
    distances = torch.cdist(new, named)  # (200, 6)
    assert distances.min() > UNNAMED_DISTANCE
    greys = (new[:, 0] == new[:, 1]) & (new[:, 1] == new[:, 2])
    assert 60 < greys.sum() < 140  # about half grey, half an unnamed colour


def test_a_few_steps_lower_the_loss_and_training_is_deterministic():
    config = dataclasses.replace(TINY, steps=30, learning_rate=3e-3, warmup_steps=5)
    trained = train_tiny_clip(config, progress=False)
    history = trained.metrics.loss_history
    assert len(history) == 30 and trained.metrics.steps == 30
    assert np.mean(history[-5:]) < np.mean(history[:5]) - 0.1
    assert not trained.model.training
    again = train_tiny_clip(config, progress=False)
    assert again.metrics.loss_history == history


def test_training_with_open_clip_loss_gives_the_same_run():
    ours = train_tiny_clip(TINY, progress=False)
    theirs = train_tiny_clip(TINY, progress=False, loss_fn=open_clip.ClipLoss())
    assert np.allclose(ours.metrics.loss_history, theirs.metrics.loss_history, atol=1e-4)


# ---------------------------------------------------------------------------------------------- cache

def test_cache_round_trip(private_cache):
    trained = load_or_train_tiny_clip(TINY, progress=False)
    assert trained.source == "trained" and cache_path(TINY).is_file()
    loaded = load_or_train_tiny_clip(TINY, progress=False)
    assert loaded.source.startswith("cache")
    assert isinstance(loaded, TrainedTinyClip) and not loaded.model.training
    for (name, a), b in zip(trained.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.metrics == trained.metrics and loaded.config == TINY


def test_other_config_other_file(private_cache):
    assert cache_path(TINY) != cache_path(dataclasses.replace(TINY, seed=1))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered", "wrong_config"])
def test_corrupt_cache_is_retrained_with_a_warning(private_cache, damage):
    trained = load_or_train_tiny_clip(TINY, progress=False)
    path = cache_path(TINY)
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "tampered":
        payload = torch.load(path, weights_only=True)
        payload["state_dict"]["logit_scale"] += 1
        torch.save(payload, path)
    else:
        save_trained(dataclasses.replace(trained, config=dataclasses.replace(TINY, steps=5)), path)
    with pytest.raises(CacheError):
        load_trained(TINY)
    with pytest.warns(UserWarning, match="training the tiny CLIP again"):
        retrained = load_or_train_tiny_clip(TINY, progress=False)
    assert retrained.source == "trained"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache loads cleanly
        assert load_or_train_tiny_clip(TINY, progress=False).source.startswith("cache")
