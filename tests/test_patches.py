"""Tests for course_lib.patches: shapes, agreement with einops / Conv2d / open_clip, invariants, bad input."""

import pytest
import torch
from einops import rearrange
from open_clip.transformer import VisionTransformer

from course_lib.patches import (PatchEmbedding, conv_patch_embedding, patch_grid, patchify,
                                patchify_einops, unpatchify)

torch.manual_seed(0)


@pytest.mark.parametrize("B, C, H, W, P", [(2, 3, 32, 32, 4), (1, 3, 224, 224, 16), (3, 1, 24, 40, 8), (2, 4, 6, 9, 3)])
def test_patchify_shape(B, C, H, W, P):
    assert patchify(torch.rand(B, C, H, W), P).shape == (B, (H // P) * (W // P), P * P * C)


def test_lecture_example_64_patches_of_4x4():
    assert patchify(torch.rand(1, 3, 32, 32), 4).shape == (1, 64, 48)


def test_patch_order_and_flattening_by_hand():
    # A 1-channel 4x4 image of 0..15 in 2x2 patches: row-major patches, each read row by row.
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    expected = torch.tensor([[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]], dtype=torch.float32)
    assert torch.equal(patchify(image, 2)[0], expected)


def test_channels_of_a_pixel_stay_together():
    image = torch.rand(1, 3, 4, 4)
    first_patch = patchify(image, 2)[0, 0]  # (P*P*C,)
    assert torch.equal(first_patch[:3], image[0, :, 0, 0])  # pixel (0, 0), its 3 channels
    assert torch.equal(first_patch[3:6], image[0, :, 0, 1])  # then pixel (0, 1)


@pytest.mark.parametrize("H, W, P", [(32, 32, 4), (24, 40, 8), (12, 18, 6)])
def test_equal_to_einops(H, W, P):
    images = torch.rand(2, 3, H, W)
    expected = rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=P, p2=P)
    assert torch.equal(patchify(images, P), expected)
    assert torch.equal(patchify_einops(images, P), expected)


@pytest.mark.parametrize("H, W, P", [(32, 32, 4), (24, 40, 8), (7, 14, 7)])
def test_unpatchify_inverts_patchify(H, W, P):
    images = torch.rand(2, 3, H, W)
    assert torch.equal(unpatchify(patchify(images, P), P, (H, W)), images)


def test_patchify_inverts_unpatchify():
    patches = torch.rand(2, 12, 4 * 4 * 3)
    assert torch.equal(patchify(unpatchify(patches, 4, (12, 16)), 4), patches)


def test_linear_on_patches_equals_conv2d():
    embedding = PatchEmbedding(image_size=(24, 32), patch_size=8, embed_dim=16, cls_token=False)
    images = torch.rand(2, 3, 24, 32)
    conv = torch.nn.Conv2d(3, 16, kernel_size=8, stride=8)
    with torch.no_grad():
        conv.weight.copy_(embedding.conv_weight())
        conv.bias.copy_(embedding.proj.bias)
    by_conv = conv(images).flatten(2).transpose(1, 2)
    by_linear = embedding.proj(patchify(images, 8))
    torch.testing.assert_close(by_linear, by_conv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv_patch_embedding(images, conv.weight, conv.bias, 8), by_conv)


def test_patch_embedding_shapes_and_positions():
    embedding = PatchEmbedding(image_size=(32, 32), patch_size=4, embed_dim=24)
    tokens = embedding(torch.rand(5, 3, 32, 32))
    assert tokens.shape == (5, 65, 24)  # 64 patches + CLS
    assert embedding.pos_embedding.shape == (65, 24)
    no_cls = PatchEmbedding(image_size=(32, 32), patch_size=4, embed_dim=24, cls_token=False)
    assert no_cls(torch.rand(5, 3, 32, 32)).shape == (5, 64, 24)
    # Parameter count: W and bias, CLS, positions.
    expected = (48 * 24 + 24) + 24 + 65 * 24
    assert sum(p.numel() for p in embedding.parameters()) == expected


def test_positions_distinguish_identical_patches():
    embedding = PatchEmbedding(image_size=(8, 8), patch_size=4, embed_dim=8, cls_token=False)
    tokens = embedding(torch.ones(1, 3, 8, 8))  # every patch identical
    assert not torch.allclose(tokens[0, 0], tokens[0, 1])  # ...but their embeddings differ


def test_equal_to_open_clip_vision_stem():
    """Our embedding with open_clip's weights reproduces open_clip's ViT stem (input to ln_pre)."""
    vit = VisionTransformer(image_size=32, patch_size=8, width=64, layers=1, heads=2, mlp_ratio=2.0, output_dim=32)
    vit.eval()
    captured = {}
    vit.ln_pre.register_forward_hook(lambda module, inputs, output: captured.setdefault("stem", inputs[0]))
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        vit(images)
        ours = PatchEmbedding(image_size=(32, 32), patch_size=8, embed_dim=64)
        ours.proj.weight.copy_(rearrange(vit.conv1.weight, "d c p1 p2 -> d (p1 p2 c)"))
        ours.proj.bias.zero_()  # open_clip's conv1 has no bias
        ours.cls_token.copy_(vit.class_embedding)
        ours.pos_embedding.copy_(vit.positional_embedding)
        torch.testing.assert_close(ours(images), captured["stem"], atol=1e-5, rtol=1e-5)


def test_patch_grid():
    assert patch_grid((224, 224), 16) == (14, 14)
    assert patch_grid((336, 336), 14) == (24, 24)


@pytest.mark.parametrize("images, patch_size, error, words", [
    (torch.rand(1, 3, 30, 32), 4, ValueError, ["height 30", "patch_size 4", "28 or 32"]),
    (torch.rand(1, 3, 32, 30), 4, ValueError, ["width 30", "28 or 32"]),
    (torch.rand(1, 3, 32, 32), 0, ValueError, ["positive", "0"]),
    (torch.rand(1, 3, 32, 32), -4, ValueError, ["-4"]),
    (torch.rand(3, 32, 32), 4, ValueError, ["(3, 32, 32)", "unsqueeze"]),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 4, TypeError, ["uint8", "float"]),
    (torch.rand(1, 3, 32, 32), 4.0, TypeError, ["4.0"]),
    ([[0.0]], 4, TypeError, ["list"]),
])
def test_bad_input_is_named(images, patch_size, error, words):
    with pytest.raises(error) as raised:
        patchify(images, patch_size)
    for word in words:
        assert word in str(raised.value)


def test_unpatchify_bad_input():
    with pytest.raises(ValueError, match="do not tile a 32x32"):
        unpatchify(torch.rand(1, 10, 48), 4, (32, 32))
    with pytest.raises(ValueError, match="height 30"):
        unpatchify(torch.rand(1, 64, 48), 4, (30, 32))


def test_patch_embedding_rejects_other_image_size():
    embedding = PatchEmbedding(image_size=(32, 32), patch_size=4)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        embedding(torch.rand(1, 3, 64, 64))
