"""Tests for course_lib.tiny_lm: tokenizer, questions, the GPT's shapes and invariants, generation, cache."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.shapes_data import COUNT_WORDS, POSITION_PHRASES, Scene, caption, make_scene, sample_scene
from course_lib.tiny_lm import (IGNORE_INDEX, QUESTION_KINDS, VOCABULARY, CausalSelfAttention, LMTrainConfig,
                                TinyLM, TinyLMConfig, WordTokenizer, accepted_answers, ask, conversation,
                                describe, encode_chat, halves_holding,
                                generate_greedy, load_or_train_tiny_lm, next_token_loss, pad_token_batch,
                                text_corpus)

torch.manual_seed(0)
TINY = TinyLMConfig(context_length=24, width=16, num_layers=2, num_heads=2)


def test_tokenizer_round_trip_and_special_ids():
    tokenizer = WordTokenizer()
    ids = tokenizer.encode("<bos> user: <image> What colour are the objects? assistant: red <eos>")
    assert ids[0] == tokenizer.bos_id and ids[2] == tokenizer.image_id and ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids) == "user: what colour are the objects ? assistant: red"
    assert tokenizer.decode(ids, skip_special=False).startswith("<bos> user: <image>")
    assert len(tokenizer) == len(VOCABULARY) == len(set(VOCABULARY))


def test_unknown_word_is_named():
    with pytest.raises(ValueError, match="'color'.*scene language"):
        WordTokenizer().encode("what color is it ?")


def test_every_generated_text_is_in_the_vocabulary():
    rng = np.random.default_rng(0)
    tokenizer = WordTokenizer()
    for _ in range(300):
        scene = sample_scene(rng, "all")
        for kind in ("caption",) + QUESTION_KINDS:
            question, answer = ask(scene, kind, rng)
            tokenizer.encode(question + " " + answer)  # raises on an unknown word


def test_answers_follow_the_metadata():
    scene = make_scene("purple", "triangle", "small", 3, "bottom")
    rng = np.random.default_rng(0)
    assert ask(scene, "colour", rng)[1] == "purple"
    assert ask(scene, "shape", rng)[1] == "triangle"
    assert ask(scene, "count", rng)[1] == COUNT_WORDS[3]
    assert ask(scene, "position", rng)[1] == POSITION_PHRASES["bottom"]
    assert ask(scene, "caption", rng)[1] == "three small purple triangles at the bottom"
    with pytest.raises(ValueError, match="unknown question kind"):
        ask(scene, "texture", rng)


def test_yes_no_questions_are_balanced_and_true():
    rng = np.random.default_rng(1)
    scene = make_scene("red", "circle", "large", 2, "left")
    pairs = [ask(scene, "yes/no", rng) for _ in range(400)]
    assert 0.4 < np.mean([answer == "yes" for _, answer in pairs]) < 0.6
    for question, answer in pairs:
        mentions = any(word in question.split() for word in ("red", "circles", "left", "two"))
        assert (answer == "yes") == mentions, question


def test_encode_chat_labels_only_replies():
    tokenizer = WordTokenizer()
    ids, labels = encode_chat([("what colour are the objects ?", "red"), ("how many objects are there ?", "two")],
                              tokenizer)
    learned = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned, skip_special=False) == "red <eos> two <eos>"
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    prompt_only, prompt_labels = encode_chat([("describe the image .", None)], tokenizer)
    assert tokenizer.vocabulary[prompt_only[-1]] == "assistant:" and set(prompt_labels) == {IGNORE_INDEX}


def test_descriptions_name_every_fact_in_some_order():
    scene = make_scene("blue", "square", "small", 2, "top")
    rng = np.random.default_rng(0)
    descriptions = {describe(scene, rng) for _ in range(40)}
    assert "two small blue squares at the top" in descriptions and len(descriptions) > 5
    for text in descriptions:
        assert all(fact in text for fact in ("two", "small", "blue", "squares", "at the top"))


def test_conversation_starts_with_the_description_and_shares_yes_no():
    rng = np.random.default_rng(0)
    scene = make_scene("blue", "square")
    turns = conversation(scene, 4, rng)
    assert len(turns) == 4 and " . " in turns[0][0] and all(" . " not in user for user, _ in turns[1:])
    replies = [reply for _ in range(300) for _, reply in conversation(scene, 1, rng, yes_no_share=0.5)]
    assert 0.4 < np.mean([r in ("yes", "no") for r in replies]) < 0.6


def test_forward_shapes_and_parameter_count():
    model = TinyLM(TINY)
    logits = model(torch.randint(len(VOCABULARY), (3, 10)))
    assert logits.shape == (3, 10, len(VOCABULARY))
    D, V, C = TINY.width, TINY.vocab_size, TINY.context_length
    per_block = (4 * D) + (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D)
    assert sum(p.numel() for p in model.parameters()) == V * D + C * D + TINY.num_layers * per_block + 2 * D


def test_attention_equals_pytorch_sdpa():
    attention = CausalSelfAttention(TINY)
    hidden = torch.randn(2, 7, TINY.width)
    B, L, D = hidden.shape
    q, k, v = attention.qkv_proj(hidden).split(D, dim=2)
    heads = lambda t: t.view(B, L, 2, D // 2).transpose(1, 2)  # noqa: E731
    expected = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    expected = attention.out_proj(expected.transpose(1, 2).reshape(B, L, D))
    torch.testing.assert_close(attention(hidden), expected, atol=1e-5, rtol=1e-5)


def test_causal_and_padding_invariance():
    model = TinyLM(TINY).eval()
    ids = torch.randint(4, len(VOCABULARY), (1, 8))
    changed = ids.clone()
    changed[0, 5:] = 4
    torch.testing.assert_close(model(ids)[:, :5], model(changed)[:, :5])  # the future does not leak back
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.int64)], dim=1)
    mask = torch.tensor([[1] * 8 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :8], model(ids), atol=1e-5, rtol=1e-5)


def test_inputs_embeds_equal_token_ids():
    model = TinyLM(TINY).eval()
    ids = torch.randint(len(VOCABULARY), (2, 6))
    torch.testing.assert_close(model(inputs_embeds=model.token_embedding(ids)), model(ids))
    with pytest.raises(TypeError, match="exactly one"):
        model()


def test_too_long_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="25 positions.*context of 24"):
        TinyLM(TINY)(torch.zeros(1, 25, dtype=torch.int64))


def test_next_token_loss_shifts_and_ignores():
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(11, (2, 5))
    labels[0, 2] = IGNORE_INDEX
    keep = labels[:, 1:] != IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    torch.testing.assert_close(next_token_loss(logits, labels), expected)


def test_pad_token_batch():
    ids, mask, labels = pad_token_batch([[1, 5, 6], [1, 7]], [[-100, 5, 6], [-100, 7]], pad_id=0)
    assert ids.tolist() == [[1, 5, 6], [1, 7, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[-100, 5, 6], [-100, 7, -100]]


def _always(model: TinyLM, token_id: int) -> TinyLM:
    """Make the LM predict ``token_id`` everywhere: the final norm outputs that token's embedding direction."""
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.copy_(10 * model.token_embedding.weight[token_id])
    return model.eval()


def test_greedy_generation_stops_on_the_stop_token_and_is_deterministic():
    tokenizer = WordTokenizer()
    model = _always(TinyLM(TINY), tokenizer.eos_id)
    prompt = model.token_embedding(torch.tensor([[tokenizer.bos_id, 5, 6]]))
    first, second = generate_greedy(model, prompt, tokenizer.eos_id), generate_greedy(model, prompt, tokenizer.eos_id)
    assert first[0].token_ids == [tokenizer.eos_id] and first[0].stopped
    assert first == second
    assert 0 < first[0].probabilities[0] <= 1


def test_generation_without_stop_ends_at_max_new_tokens_or_the_context():
    tokenizer = WordTokenizer()
    red = tokenizer.token_to_id["red"]
    model = _always(TinyLM(TINY), red)
    prompt = model.token_embedding(torch.tensor([[tokenizer.bos_id] * 4, [tokenizer.bos_id] * 4]))
    outputs = generate_greedy(model, prompt, tokenizer.eos_id, max_new_tokens=5)
    assert [o.token_ids for o in outputs] == [[red] * 5] * 2 and not outputs[0].stopped
    near_full = model.token_embedding(torch.full((1, 22), tokenizer.bos_id))
    assert len(generate_greedy(model, near_full, tokenizer.eos_id, max_new_tokens=10)[0].token_ids) == 2
    with pytest.raises(ValueError, match="no room"):
        generate_greedy(model, model.token_embedding(torch.full((1, 24), 1)), tokenizer.eos_id)


def test_corpus_is_deterministic():
    config = LMTrainConfig(num_conversations=20, seed=3)
    assert text_corpus(config) == text_corpus(config)


TINY_TRAIN = LMTrainConfig(num_conversations=40, turns=1, steps=3, batch_size=4)


def test_cache_trains_then_loads_then_recovers_from_corruption(private_cache):
    config = TinyLMConfig(context_length=40, width=16, num_layers=1, num_heads=2)
    first = load_or_train_tiny_lm(config, TINY_TRAIN, progress=False)
    assert "trained" in first.message and len(first.metrics["losses"]) == 3
    second = load_or_train_tiny_lm(config, TINY_TRAIN, progress=False)
    assert "loaded from the cache" in second.message
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    (weights,) = (private_cache / "tiny_lm").glob("*.pt")
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third = load_or_train_tiny_lm(config, TINY_TRAIN, progress=False)
    assert "trained" in third.message
    assert any("checksum" in str(w.message) for w in caught)
    for a, b in zip(first.model.state_dict().values(), third.model.state_dict().values()):
        assert torch.equal(a, b)  # retraining is deterministic


def test_punctuation_is_never_dropped_silently():
    tokenizer = WordTokenizer()
    assert tokenizer.split("red?") == ["red", "?"]
    with pytest.raises(ValueError, match="'!'"):
        tokenizer.encode("red!")


def test_a_corner_object_is_in_two_halves():
    corner = Scene("red", "circle", "small", 1, "left", ((0.2, 0.2),))
    assert halves_holding(corner) == ("left", "top")
    middle = Scene("red", "circle", "small", 1, "left", ((0.2, 0.5),))
    assert halves_holding(middle) == ("left",)
    assert accepted_answers(corner, "position", "on the left") == ("on the left", "at the top")
    assert accepted_answers(corner, "caption", caption(corner)) == ("one small red circle on the left",
                                                                    "one small red circle at the top")
    assert accepted_answers(corner, "colour", "red") == ("red",)


def test_yes_no_about_positions_follows_the_picture():
    corner = Scene("red", "circle", "small", 1, "left", ((0.2, 0.2),))
    rng = np.random.default_rng(0)
    for _ in range(200):
        question, answer = ask(corner, "yes/no", rng)
        if "on the left" in question or "at the top" in question:
            assert answer == "yes", question
        if "on the right" in question or "at the bottom" in question:
            assert answer == "no", question
