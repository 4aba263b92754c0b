"""Tests for course_lib.connector: projector shapes and counts, the splice, freezing, the cross-attention cost."""

import pytest
import torch
import torch.nn as nn

from course_lib.checks.connector import tiny_llava
from course_lib.connector import (IGNORE_INDEX, GatedCrossAttentionLayer, build_projector, count_parameters,
                                  cross_attention_layer_parameters, pad_batch, parameters_with_gradient,
                                  projector_parameters, set_trainable, splice_conversation, splice_image)

torch.manual_seed(0)


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
@pytest.mark.parametrize("vision_dim, lm_dim", [(64, 64), (64, 96), (1024, 4096)])
def test_projector_shapes_and_parameter_counts(kind, vision_dim, lm_dim):
    projector = build_projector(kind, vision_dim, lm_dim)
    assert projector(torch.randn(2, 3, vision_dim)).shape == (2, 3, lm_dim)
    assert count_parameters(projector) == projector_parameters(kind, vision_dim, lm_dim)


def test_projector_kinds_match_llava():
    linear = build_projector("linear", 1024, 4096)
    assert isinstance(linear, nn.Linear) and count_parameters(linear) == 1024 * 4096 + 4096
    mlp = build_projector("mlp2x_gelu", 1024, 4096)
    assert [type(m) for m in mlp] == [nn.Linear, nn.GELU, nn.Linear]
    shapes = (mlp[0].in_features, mlp[0].out_features, mlp[2].in_features, mlp[2].out_features)
    assert shapes == (1024, 4096, 4096, 4096)
    # LLaVA-1.5 7B: CLIP ViT-L/14 (1024) -> Vicuna-7B (4096): about 21M parameters
    assert count_parameters(mlp) == 20_979_712


def test_projector_bad_input():
    with pytest.raises(ValueError, match="unknown projector kind 'mlp3x'.*'linear', 'mlp2x_gelu'"):
        build_projector("mlp3x", 8, 8)
    with pytest.raises(ValueError, match="vision_dim must be a positive int, got 0"):
        build_projector("linear", 0, 8)


def _splice_inputs(position: int, N: int = 4, D: int = 6):
    embedding = nn.Embedding(20, D)
    prompt = torch.tensor([1, 7, 8, 9, 10])
    prompt = torch.cat([prompt[:position], torch.tensor([3]), prompt[position:]])  # <image> = 3 at `position`
    answer = torch.tensor([12, 13, 2])
    return prompt, answer, torch.randn(N, D), embedding


@pytest.mark.parametrize("position", [0, 2, 5])
def test_splice_positions_mask_and_labels(position):
    prompt, answer, image, embedding = _splice_inputs(position)
    out = splice_image(prompt, answer, image, embedding, image_token_id=3)
    N, L = image.shape[0], len(prompt) - 1 + image.shape[0] + len(answer)
    assert out.embeds.shape == (L, 6) and out.labels.shape == (L,) and out.attention_mask.shape == (L,)
    torch.testing.assert_close(out.embeds[position:position + N], image)  # the image sits where <image> was
    text = torch.cat([prompt[:position], prompt[position + 1:], answer])
    text_positions = [i for i in range(L) if not position <= i < position + N]
    torch.testing.assert_close(out.embeds[text_positions], embedding(text))
    assert out.labels.tolist() == [IGNORE_INDEX] * (L - len(answer)) + answer.tolist()
    assert out.attention_mask.tolist() == [1] * L


def test_splice_conversation_keeps_every_reply_label():
    embedding = nn.Embedding(20, 6)
    ids = torch.tensor([1, 4, 3, 7, 5, 12, 2, 4, 8, 5, 13, 2])  # <bos> user: <image> q assistant: a <eos> user: q ...
    labels = torch.tensor([-100] * 5 + [12, 2] + [-100] * 3 + [13, 2])
    out = splice_conversation(ids, labels, torch.randn(4, 6), embedding, image_token_id=3)
    assert out.labels.tolist() == [-100] * 8 + [12, 2] + [-100] * 3 + [13, 2]
    assert out.embeds.shape == (15, 6)
    single = splice_image(ids[:5], ids[5:7], torch.zeros(4, 6), embedding, 3)
    assert single.labels.tolist() == [-100] * 8 + [12, 2]


def test_splice_gradients_reach_the_image_tokens():
    prompt, answer, image, embedding = _splice_inputs(2)
    image.requires_grad_(True)
    splice_image(prompt, answer, image, embedding, 3).embeds.sum().backward()
    assert torch.equal(image.grad, torch.ones_like(image))


def test_splice_needs_exactly_one_image_token():
    embedding = nn.Embedding(20, 6)
    with pytest.raises(ValueError, match="exactly one <image> token.*holds 0"):
        splice_image(torch.tensor([1, 7]), torch.tensor([2]), torch.randn(4, 6), embedding, 3)
    with pytest.raises(ValueError, match="holds 2"):
        splice_image(torch.tensor([3, 3]), torch.tensor([2]), torch.randn(4, 6), embedding, 3)


def test_pad_batch_masks_and_ignores_padding():
    short = splice_image(*_splice_inputs(1, N=2), image_token_id=3)
    long = splice_image(*_splice_inputs(1, N=5), image_token_id=3)
    batch = pad_batch([short, long])
    assert batch.embeds.shape == (2, 13, 6)
    assert batch.attention_mask[0].tolist() == [1] * 10 + [0] * 3
    assert batch.labels[0, 10:].tolist() == [IGNORE_INDEX] * 3
    assert torch.equal(batch.embeds[0, 10:], torch.zeros(3, 6))
    assert torch.equal(batch.labels[1], long.labels)


def test_set_trainable_per_stage():
    model = tiny_llava()
    set_trainable(model, 1)
    assert count_parameters(model, trainable_only=True) == count_parameters(model.projector)
    set_trainable(model, 2)
    expected = count_parameters(model.projector) + count_parameters(model.lm)
    assert count_parameters(model, trainable_only=True) == expected
    assert not any(p.requires_grad for p in model.vision.parameters())
    with pytest.raises(ValueError, match="stages 1 and 2, got 3"):
        set_trainable(model, 3)


def test_stage1_gradients_reach_only_the_projector():
    model = tiny_llava()
    set_trainable(model, 1)
    features = model.image_features(torch.rand(2, 3, 32, 32))
    ids, labels = model.encode([("where are the objects ?", "at the top")])
    model(features, [ids, ids], [labels, labels]).backward()
    with_gradient = parameters_with_gradient(model)
    assert with_gradient and all(name.startswith("projector.") for name in with_gradient)
    assert len(with_gradient) == len(list(model.projector.parameters()))


def test_cross_attention_layer_count_matches_formula_and_starts_as_identity():
    layer = GatedCrossAttentionLayer(lm_dim=64, vision_dim=48, num_heads=4)
    assert count_parameters(layer) == cross_attention_layer_parameters(64, 48, ffn_dim=256)
    hidden, image = torch.randn(2, 7, 64), torch.randn(2, 16, 48)
    assert layer(hidden, image).shape == (2, 7, 64)
    torch.testing.assert_close(layer(hidden, image), hidden)  # gates at 0: the pretrained LM is unchanged


def test_llama3_405b_cross_attention_is_about_100b():
    # Llama 3 405B: 126 layers, width 16384, SwiGLU FFN 53248, 8 KV heads x 128; vision width 7680;
    # a cross-attention layer after every 4th self-attention layer (Llama 3 paper, section 7).
    per_layer = cross_attention_layer_parameters(16384, 7680, 53248, kv_dim=1024, swiglu=True, bias=False)
    total = (126 // 4) * per_layer
    assert 95e9 < total < 105e9
    assert projector_parameters("mlp2x_gelu", 7680, 16384) < total / 200
