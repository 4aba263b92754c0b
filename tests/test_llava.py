"""Tests for course_lib.llava: penultimate patch features, the assembled model, generation, stages, cache."""

import copy

import open_clip
import pytest
import torch

from course_lib.checks.connector import tiny_llava
from course_lib.connector import parameters_with_gradient
from course_lib.llava import (Answer, Instruction, LlavaConfig, StageConfig, answer_accuracy, caption_instructions,
                              conversations, load_or_train_llava,
                              patch_features, question_instructions, state_fingerprint, train_stage, vision_tower)
from course_lib.shapes_data import Scene, make_dataset
from course_lib.tiny_lm import QUESTION_KINDS, LMTrainConfig, TinyLMConfig, load_or_train_tiny_lm

torch.manual_seed(0)


def _tiny_clip(layers: int = 3):
    torch.manual_seed(0)
    return open_clip.CLIP(32, dict(image_size=32, patch_size=8, width=32, layers=layers, head_width=16),
                          dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)).eval()


@pytest.mark.parametrize("layer", [-2, -1, 0, 1])
def test_patch_features_equal_open_clip_intermediates(layer):
    visual = _tiny_clip().visual
    images = torch.rand(2, 3, 32, 32)
    features = patch_features(visual, images, layer)
    assert features.shape == (2, 16, 32)  # N = (32 / 8)^2 patches, CLS dropped
    if layer != 0:  # open_clip's intermediates are block outputs: hidden_states[1:]
        block = range(1, 4)[layer] - 1 if layer < 0 else layer - 1
        reference = visual.forward_intermediates(images, indices=[block], output_fmt="NLC", intermediates_only=True)
        torch.testing.assert_close(features, reference["image_intermediates"][0], atol=1e-5, rtol=1e-5)


def test_last_hidden_state_gives_the_pooled_embedding():
    visual = _tiny_clip().visual
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        x = visual._embeds(images)
        x = visual.transformer(x)
    torch.testing.assert_close(patch_features(visual, images, -1), x[:, 1:], atol=1e-5, rtol=1e-5)


def test_wrong_image_size_is_a_clear_error():
    model = tiny_llava()
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\), got \(1, 3, 48, 48\); render them with image_size=32"):
        model.answer(torch.rand(1, 3, 48, 48), "what colour are the objects ?")
    with pytest.raises(ValueError, match="got \\(3, 32, 32\\)"):
        model.image_features(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="VisionTransformer"):
        patch_features(torch.nn.Linear(3, 3), torch.rand(1, 3, 32, 32))


def test_question_longer_than_the_context_is_a_clear_error():
    model = tiny_llava()  # context 48, 16 image tokens
    long_question = " ".join(["are the objects red ?"] * 8)
    with pytest.raises(ValueError, match="needs 60 positions, but the LM's context holds 48; ask a question of at"):
        model.answer(torch.rand(1, 3, 32, 32), long_question)


def test_too_long_conversation_is_a_clear_error():
    model = tiny_llava()
    turns = [("describe the image .", "three small red circles on the left")] * 3
    with pytest.raises(ValueError, match="a conversation of 3 turns needs .* positions .*; use fewer turns"):
        model.encode(turns)


def test_multi_turn_encoding_learns_every_answer():
    model = tiny_llava()
    ids, labels = model.encode([("what colour are the objects ?", "red"), ("where are the objects ?", "at the top")])
    learned = [model.tokenizer.vocabulary[i] for i, label in zip(ids, labels) if label != -100]
    assert learned == ["red", "<eos>", "at", "the", "top", "<eos>"]
    assert ids.count(model.tokenizer.image_id) == 1


def test_conversations_group_by_image():
    scenes = make_dataset(3, seed=1).scenes
    chats = conversations(question_instructions(scenes), turns=4, seed=0)
    assert [index for index, _ in chats] == [0, 0, 1, 1, 2, 2]
    assert sorted(len(turns) for _, turns in chats) == [2, 2, 2, 4, 4, 4]
    assert len(question_instructions(scenes, yes_no_per_image=3)) == 3 * 8
    assert conversations(question_instructions(scenes), turns=4, seed=0) == chats


def test_unknown_word_in_a_question_is_named():
    with pytest.raises(ValueError, match="'color'"):
        tiny_llava().answer(torch.rand(1, 3, 32, 32), "what color is it ?")


def test_generation_is_deterministic_and_stops():
    model = tiny_llava().eval()
    eos = model.tokenizer.eos_id
    with torch.no_grad():  # make <eos> the most likely token after two steps: rig the final norm
        model.lm.final_norm.weight.zero_()
        model.lm.final_norm.bias.copy_(10 * model.lm.token_embedding.weight[eos])
    images = torch.rand(3, 3, 32, 32)
    questions = ["what colour are the objects ?", "how many objects are there ?", "describe the image ."]
    first, second = model.answer(images, questions), model.answer(images, questions)
    assert first == second
    assert all(answer.stopped and answer.tokens == ["<eos>"] and answer.text == "" for answer in first)


def test_untrained_generation_respects_max_new_tokens():
    model = tiny_llava().eval()
    answers = model.answer(torch.rand(2, 3, 32, 32), "where are the objects ?", max_new_tokens=3)
    assert all(len(answer.tokens) <= 3 and len(answer.probabilities) == len(answer.tokens) for answer in answers)
    assert all(0 < p <= 1 for answer in answers for p in answer.probabilities)


def test_stage1_gives_no_gradient_to_vision_or_lm_and_changes_only_the_projector():
    model = tiny_llava()
    data = make_dataset(8, seed=0)
    features = model.image_features(data.images)
    vision, lm, projector = (copy.deepcopy(m.state_dict()) for m in (model.vision, model.lm, model.projector))
    losses = train_stage(model, features, caption_instructions(data.scenes), 1,
                         StageConfig(steps=3, learning_rate=1e-3, batch_size=4), progress=False)
    assert len(losses) == 3
    assert all(name.startswith("projector.") for name in parameters_with_gradient(model))
    assert all(torch.equal(v, model.vision.state_dict()[k]) for k, v in vision.items())
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in lm.items())
    assert not all(torch.equal(v, model.projector.state_dict()[k]) for k, v in projector.items())


def test_stage2_trains_projector_and_lm_not_vision():
    model = tiny_llava()
    data = make_dataset(8, seed=0)
    vision = copy.deepcopy(model.vision.state_dict())
    train_stage(model, model.image_features(data.images), question_instructions(data.scenes), 2,
                StageConfig(steps=2, learning_rate=1e-3, batch_size=4), progress=False)
    names = parameters_with_gradient(model)
    assert any(n.startswith("lm.") for n in names) and any(n.startswith("projector.") for n in names)
    assert not any(n.startswith("vision.") for n in names)
    assert all(torch.equal(v, model.vision.state_dict()[k]) for k, v in vision.items())


def test_instruction_data_from_metadata():
    scenes = make_dataset(5, seed=1).scenes
    captions = caption_instructions(scenes)
    assert [c.answer for c in captions] == make_dataset(5, seed=1).captions
    questions = question_instructions(scenes, seed=0)
    assert len(questions) == 5 * (1 + len(QUESTION_KINDS))
    assert {q.kind for q in questions} == {"caption", *QUESTION_KINDS}
    colour = [q for q in questions if q.kind == "colour"]
    assert [q.answer for q in colour] == [s.colour for s in scenes]
    assert question_instructions(scenes, seed=0) == questions


def test_answer_accuracy_reports_each_kind():
    model = tiny_llava().eval()
    data = make_dataset(4, seed=2)
    accuracy = answer_accuracy(model, model.image_features(data.images), question_instructions(data.scenes))
    assert set(accuracy) == {"caption", *QUESTION_KINDS, "questions"}
    assert all(0 <= value <= 1 for value in accuracy.values())


def test_accuracy_accepts_every_true_answer_and_averages_kinds(monkeypatch):
    model = tiny_llava().eval()
    corner = Scene("red", "circle", "small", 1, "left", ((0.2, 0.2),))
    data = [Instruction(0, "position", "where are the objects ?", "on the left", ("on the left", "at the top")),
            Instruction(0, "colour", "what colour are the objects ?", "red", ("red",)),
            Instruction(0, "colour", "what colour are the objects ?", "red", ("red",))]
    replies = iter(["at the top", "red", "blue"])
    monkeypatch.setattr(model, "answer_features", lambda features, questions: [
        Answer(next(replies), [], [], True) for _ in questions])
    accuracy = answer_accuracy(model, torch.zeros(1, 16, 32), data)
    assert accuracy == {"position": 1.0, "colour": 0.5, "questions": 0.75}
    assert corner.position == "left"


def test_vision_tower_and_fingerprint():
    clip = _tiny_clip()
    assert vision_tower(clip) is clip.visual and vision_tower(clip.visual) is clip.visual
    assert state_fingerprint(clip.visual) == state_fingerprint(copy.deepcopy(clip.visual))
    with pytest.raises(TypeError):
        vision_tower(torch.nn.Linear(2, 2))


def test_load_or_train_caches_both_stages(private_cache):
    clip = _tiny_clip(layers=2)
    lm = load_or_train_tiny_lm(TinyLMConfig(context_length=48, width=16, num_layers=1, num_heads=2),
                               LMTrainConfig(num_conversations=40, turns=1, steps=2, batch_size=4), progress=False)
    config = LlavaConfig(num_train_images=8, stage1=StageConfig(2, 1e-3, 4), stage2=StageConfig(2, 1e-3, 4))
    first = load_or_train_llava(clip, lm, config, progress=False)
    assert "trained" in first.message and len(first.metrics["stage2_losses"]) == 2
    second = load_or_train_llava(clip, lm, config, progress=False)
    assert "loaded from the cache" in second.message
    for a, b in ((first.stage1, second.stage1), (first.stage2, second.stage2)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert all(torch.equal(x, y) for x, y in zip(first.initial.lm.state_dict().values(),
                                                  first.stage1.lm.state_dict().values()))  # stage 1 leaves the LM
