"""LLaVA on a laptop: tiny CLIP's frozen image tower, a connector, the tiny LM, and two tuning stages.

Liu et al., 2023, *Visual Instruction Tuning* (LLaVA) and 2024, *Improved Baselines with Visual
Instruction Tuning* (LLaVA-1.5), rebuilt from the course's parts:

    image (B, 3, 32, 32) -> tiny CLIP's image tower (lesson 02), frozen
        -> penultimate layer's patch tokens, CLS dropped: (B, N, Dv)        patch_features
        -> projector (course_lib.connector): (B, N, D)
        -> spliced at <image> into "<bos> user: <image> {question} assistant:"
        -> tiny LM (course_lib.tiny_lm) -> answer, greedily, until <eos>

Why the penultimate layer: CLIP's last layer is shaped for one job, pooling into the contrastive
embedding; LLaVA-1.5 takes ``hidden_states[-2]`` (the input of the last block) for more general
patch features, and drops the CLS token because the LM wants the patches themselves.

Instruction data is written from each scene's metadata: the analog of LLaVA prompting text-only
GPT-4 with COCO captions and boxes to write conversations. Stage 1 (feature alignment) trains only
the projector, on captions (LLaVA: 558K caption pairs, lr 1e-3); stage 2 (visual instruction
tuning) trains the projector and the LM on multi-turn conversations about each image: caption,
colour, shape, count, position and several yes/no questions (LLaVA-1.5: 665K conversations). The
vision tower never trains, so its features are computed once and reused for every step.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
from open_clip.transformer import VisionTransformer
from tqdm.auto import tqdm

from course_lib.connector import (IGNORE_INDEX, SplicedSequence, build_projector, pad_batch, set_trainable,
                                  splice_conversation)
from course_lib.runtime import (TRAINING_THREADS, cache_dir, load_checkpoint, save_checkpoint, settings_key,
                                state_dict_sha256, torch_threads)
from course_lib.shapes_data import DATA_VERSION, Scene, make_dataset
from course_lib.tiny_lm import (QUESTION_KINDS, TEXT_VERSION, Generation, TinyLM, TrainedLM, WordTokenizer,
                                accepted_answers, ask, cosine_schedule, encode_chat, generate_greedy,
                                load_or_train_tiny_lm, next_token_loss)


def patch_features(visual: VisionTransformer, images: torch.Tensor, layer: int = -2) -> torch.Tensor:
    """The image tower's hidden states after block ``layer``, patch tokens only (LLaVA-1.5's features).

    ``hidden_states`` counts as Hugging Face does: entry 0 is the input of the first block (patch
    embeddings + CLS + positions, after ``ln_pre``), entry i the output of block i, so ``-2`` is the
    input of the last block. open_clip's ``VisionTransformer.forward`` returns only the pooled
    embedding, so this runs its stem and blocks by hand (the same steps as its ``_embeds`` and
    ``transformer``); ``forward_intermediates`` gives the same numbers (see the tests).

    Args:
        visual: an open_clip ``VisionTransformer`` (``clip.visual``).
        images: ``(B, 3, H, W)`` in [0, 1], H and W the tower's image size.
        layer: which hidden state, Python-style index into the ``num_blocks + 1`` states.

    Returns:
        ``(B, N, Dv)``, N = (H / P) * (W / P) patches in row-major order.
    """
    if not isinstance(visual, VisionTransformer):
        raise TypeError(f"expected an open_clip VisionTransformer (clip.visual), got {type(visual).__name__}")
    H, W = visual.image_size
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, H, W):
        raise ValueError(f"the vision encoder takes images of shape (B, 3, {H}, {W}), got {tuple(images.shape)}; "
                         f"render them with image_size={H} (or resize them)")
    blocks = visual.transformer.resblocks
    index = range(len(blocks) + 1)[layer]  # -2 -> len(blocks) - 1; raises IndexError when out of range
    B = images.shape[0]
    x = visual.conv1(images)  # (B, Dv, H/P, W/P): lesson 01's patch embedding as a strided Conv2d
    x = x.flatten(2).transpose(1, 2)  # (B, N, Dv), patches in row-major order
    cls = visual.class_embedding.expand(B, 1, -1)  # (B, 1, Dv)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding  # (B, 1 + N, Dv)
    x = visual.ln_pre(x)  # hidden_states[0]
    for block in blocks[:index]:
        x = block(x)  # (B, 1 + N, Dv): hidden_states[i] after block i
    return x[:, 1:]  # (B, N, Dv): CLS dropped


@dataclass
class Answer:
    """One generated answer, with what the widget shows."""

    text: str  # the answer, special tokens removed
    tokens: list[str]  # each generated token, "<eos>" included when generation stopped on it
    probabilities: list[float]  # the model's probability of each generated token
    stopped: bool  # True when <eos> ended it


class LlavaModel(nn.Module):
    """Frozen vision tower + projector + LM, with LLaVA's prompt template and greedy answering."""

    def __init__(self, vision: VisionTransformer, lm: TinyLM, tokenizer: WordTokenizer,
                 projector_kind: str = "mlp2x_gelu", feature_layer: int = -2):
        super().__init__()
        self.vision = vision.eval().requires_grad_(False)  # never trained, in either stage
        self.projector = build_projector(projector_kind, vision.transformer.width, lm.config.width)
        self.lm = lm
        self.tokenizer = tokenizer
        self.feature_layer = feature_layer
        self.num_image_tokens = int(np.prod(vision.grid_size))  # N
        self.projector_input_dim = vision.transformer.width  # Dv

    def train(self, mode: bool = True) -> "LlavaModel":
        super().train(mode)
        self.vision.eval()  # a frozen tower stays in eval mode (no dropout, fixed statistics)
        return self

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, N, Dv)``: the frozen tower's penultimate patch features."""
        return patch_features(self.vision, images, self.feature_layer)

    def encode(self, turns: list[tuple[str, str | None]]) -> tuple[list[int], list[int]]:
        """A conversation about the image as ids and labels (``tiny_lm.encode_chat``'s template).

        ``<bos> user: <image> {question 1} assistant: {answer 1} <eos> user: {question 2} ...``: the
        image goes into the first turn; labels are IGNORE_INDEX except on the answers. A last answer
        of None ends the text after ``assistant:``, for generation. Too long for the context
        (image tokens included): ``ValueError`` saying by how much.
        """
        (first_question, first_answer), *rest = turns
        ids, labels = encode_chat([(f"<image> {first_question}", first_answer), *rest], self.tokenizer)
        N, context = self.num_image_tokens, self.lm.config.context_length
        needed = len(ids) - 1 + N + (1 if turns[-1][1] is None else 0)  # <image> becomes N; room for an answer
        if needed > context and len(turns) == 1:
            words = len(self.tokenizer.encode(first_question))
            raise ValueError(f"the question is {words} tokens long: with {N} image tokens and the template it "
                             f"needs {needed} positions, but the LM's context holds {context}; ask a question "
                             f"of at most {words - (needed - context)} words")
        if needed > context:
            raise ValueError(f"a conversation of {len(turns)} turns needs {needed} positions ({N} image tokens "
                             f"included), but the LM's context holds {context}; use fewer turns")
        return ids, labels

    def prompt_ids(self, question: str) -> list[int]:
        """``<bos> user: <image> {question} assistant:`` as ids, ready for generation."""
        return self.encode([(question, None)])[0]

    def splice(self, features: torch.Tensor, ids: list[list[int]], labels: list[list[int]]) -> SplicedSequence:
        """Project ``(B, N, Dv)`` features and splice each into its conversation: padded ``(B, L, ...)``."""
        image_embeds = self.projector(features)  # (B, N, D)
        return pad_batch([splice_conversation(torch.tensor(one_ids), torch.tensor(one_labels, dtype=torch.int64),
                                              image, self.lm.token_embedding, self.tokenizer.image_id)
                          for one_ids, one_labels, image in zip(ids, labels, image_embeds)])

    def forward(self, features: torch.Tensor, ids: list[list[int]], labels: list[list[int]]) -> torch.Tensor:
        """The training loss: next-token cross-entropy on the answers' positions only.

        Args:
            features: ``(B, N, Dv)`` image features, one image per conversation.
            ids, labels: B conversations from :meth:`encode`.
        """
        batch = self.splice(features, ids, labels)
        logits = self.lm(inputs_embeds=batch.embeds, attention_mask=batch.attention_mask)  # (B, L, V)
        return next_token_loss(logits, batch.labels)

    @torch.no_grad()
    def answer_features(self, features: torch.Tensor, questions: list[str], max_new_tokens: int = 10) -> list[Answer]:
        """Greedy answers to one question per image, given ``(B, N, Dv)`` features."""
        if features.shape[0] != len(questions):
            raise ValueError(f"got {features.shape[0]} images but {len(questions)} questions; "
                             "give one question per image")
        prompts = [self.prompt_ids(question) for question in questions]
        answers: list[Answer | None] = [None] * len(prompts)
        for length in sorted({len(prompt) for prompt in prompts}):  # batch prompts of equal length together
            group = [i for i, prompt in enumerate(prompts) if len(prompt) == length]
            batch = self.splice(features[group], [prompts[i] for i in group], [[IGNORE_INDEX] * length] * len(group))
            for i, generation in zip(group, generate_greedy(self.lm, batch.embeds, self.tokenizer.eos_id,
                                                            max_new_tokens)):
                answers[i] = self._as_answer(generation)
        return answers

    def answer(self, images: torch.Tensor, questions: list[str] | str, max_new_tokens: int = 10) -> list[Answer]:
        """Greedy answers for ``(B, 3, H, W)`` images; one question for all, or one per image."""
        questions = [questions] * images.shape[0] if isinstance(questions, str) else questions
        return self.answer_features(self.image_features(images), questions, max_new_tokens)

    def _as_answer(self, generation: Generation) -> Answer:
        tokens = [self.tokenizer.vocabulary[i] for i in generation.token_ids]
        return Answer(self.tokenizer.decode(generation.token_ids), tokens, generation.probabilities,
                      generation.stopped)


def format_sequence(model: LlavaModel, question: str, answer: str, show_image_tokens: int = 2) -> str:
    """The assembled training sequence as a table: position, what the LM reads there, mask, label.

    Image positions show as ``[img k/N]``; the middle ones are elided. Labels follow Hugging Face's
    convention: the label at position i is the token at i (the loss compares it with the prediction
    made at i - 1), and -100 means "nothing to learn here".
    """
    ids, labels = model.encode([(question, answer)])
    features = torch.zeros(1, model.num_image_tokens, model.projector_input_dim)
    with torch.no_grad():
        spliced = model.splice(features, [ids], [labels])
    position = ids.index(model.tokenizer.image_id)
    N = model.num_image_tokens
    names = ([model.tokenizer.vocabulary[i] for i in ids[:position]] + [f"[img {k + 1}/{N}]" for k in range(N)]
             + [model.tokenizer.vocabulary[i] for i in ids[position + 1:]])
    lines = [f"{'pos':>4}  {'input':<13}{'mask':>5}  label"]
    for index, (name, mask, label) in enumerate(zip(names, spliced.attention_mask[0].tolist(),
                                                    spliced.labels[0].tolist())):
        if position + show_image_tokens <= index < position + N - 1:
            if index == position + show_image_tokens:
                lines.append(f"{'...':>4}  {'...':<13}{'...':>5}  ...")
            continue
        label_text = "-100" if label < 0 else model.tokenizer.vocabulary[label]
        lines.append(f"{index:>4}  {name:<13}{mask:>5}  {label_text}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Instruction data, written from the scenes' metadata

@dataclass(frozen=True)
class Instruction:
    image_index: int  # which image of the dataset it is about
    kind: str  # "caption" or one of QUESTION_KINDS
    question: str  # the user's turn, without the image
    answer: str  # the reply to learn (the stop token is added when encoding)
    accepted: tuple[str, ...] = ()  # every answer true of the image (positions can be ambiguous); () = answer only


def _instruction(image_index: int, scene: Scene, kind: str, rng: np.random.Generator) -> Instruction:
    question, answer = ask(scene, kind, rng)
    return Instruction(image_index, kind, question, answer, accepted_answers(scene, kind, answer))


def caption_instructions(scenes: list[Scene]) -> list[Instruction]:
    """Stage 1's data: "describe the image ." -> the caption, one per image."""
    rng = np.random.default_rng(0)  # unused by captions; ask() takes one for yes/no questions
    return [_instruction(i, scene, "caption", rng) for i, scene in enumerate(scenes)]


def question_instructions(scenes: list[Scene], seed: int = 0, yes_no_per_image: int = 1) -> list[Instruction]:
    """Stage 2's data: per image a caption, one question of each kind, and ``yes_no_per_image`` yes/no questions."""
    rng = np.random.default_rng(seed)
    kinds = ("caption",) + tuple(kind for kind in QUESTION_KINDS if kind != "yes/no") + ("yes/no",) * yes_no_per_image
    return [_instruction(i, scene, kind, rng) for i, scene in enumerate(scenes) for kind in kinds]


# ----------------------------------------------------------------------------------------------
# Training and evaluation

@dataclass
class StageConfig:
    steps: int  # optimiser steps
    learning_rate: float  # AdamW peak, cosine decay after a short warm-up
    batch_size: int = 64  # conversations per step
    turns: int = 1  # instructions about one image joined into one conversation, as in LLaVA's multi-turn data
    seed: int = 0  # conversation grouping and batch order


def conversations(data: list[Instruction], turns: int, seed: int = 0) -> list[tuple[int, list[tuple[str, str]]]]:
    """Group the instructions about each image, in a shuffled order, into conversations of up to ``turns``.

    Returns ``(image_index, [(question, answer), ...])`` pairs. Several questions about the image in one
    sequence cost one copy of the N image tokens instead of one per question.
    """
    by_image: dict[int, list[Instruction]] = {}
    for item in data:
        by_image.setdefault(item.image_index, []).append(item)
    rng = np.random.default_rng(seed)
    chats = []
    for image_index, items in by_image.items():
        order = rng.permutation(len(items)).tolist()
        for start in range(0, len(items), turns):
            chats.append((image_index, [(items[i].question, items[i].answer) for i in order[start:start + turns]]))
    return chats


def train_stage(model: LlavaModel, features: torch.Tensor, data: list[Instruction], stage: int,
                config: StageConfig, progress: bool = True) -> list[float]:
    """Train ``model`` in place for one LLaVA stage; returns the loss of every step.

    Args:
        model: the model; :func:`~course_lib.connector.set_trainable` picks what trains.
        features: ``(num_images, N, Dv)`` precomputed image features (the tower is frozen).
        data: instructions whose ``image_index`` points into ``features``.
        stage: 1 (projector only) or 2 (projector + LM).
        config: steps, learning rate, batch size, turns per conversation, seed.
    """
    set_trainable(model, stage)
    chats = conversations(data, config.turns, config.seed)
    encoded = [model.encode(turns) for _, turns in chats]  # (ids, labels) per conversation
    image_index = torch.tensor([index for index, _ in chats])
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=0.0)
    schedule = cosine_schedule(optimizer, config.steps)
    losses = []
    model.train()
    for _ in tqdm(range(config.steps), desc=f"stage {stage}", disable=not progress):
        picks = torch.randint(len(chats), (config.batch_size,), generator=generator).tolist()
        loss = model(features[image_index[picks]], [encoded[i][0] for i in picks], [encoded[i][1] for i in picks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def answer_accuracy(model: LlavaModel, features: torch.Tensor, data: list[Instruction],
                    batch_size: int = 256) -> dict[str, float]:
    """Exact-match accuracy of greedy answers, per kind, and ``"questions"``: the mean over the question kinds.

    An answer is right when it is one of the item's ``accepted`` answers: "at the top" is right for
    one object in the top-left corner even if the metadata says "on the left".
    """
    correct: dict[str, list[bool]] = {}
    for start in range(0, len(data), batch_size):
        chunk = data[start:start + batch_size]
        chunk_features = features[[item.image_index for item in chunk]]  # (len(chunk), N, Dv)
        answers = model.answer_features(chunk_features, [item.question for item in chunk])
        for item, answer in zip(chunk, answers):
            correct.setdefault(item.kind, []).append(answer.text in (item.accepted or (item.answer,)))
    accuracy = {kind: float(np.mean(hits)) for kind, hits in correct.items()}
    question_kinds = [kind for kind in accuracy if kind != "caption"]
    if question_kinds:  # each kind counts the same, however many questions of it there are
        accuracy["questions"] = float(np.mean([accuracy[kind] for kind in question_kinds]))
    return accuracy


# ----------------------------------------------------------------------------------------------
# Both stages end to end, cached

@dataclass
class LlavaConfig:
    projector_kind: str = "mlp2x_gelu"  # LLaVA-1.5's connector
    feature_layer: int = -2  # hidden_states[-2]: the penultimate layer
    num_train_images: int = 5000  # training scenes (the 18 seen colour-shape pairs)
    yes_no_per_image: int = 5  # yes/no questions per training image in stage 2 (the hardest kind)
    data_seed: int = 0  # which scenes, and which yes/no questions
    init_seed: int = 0  # the projector's random initialisation
    # LLaVA: stage 1 at lr 1e-3 (batch 256), stage 2 at 2e-5 on a 7B LM. A tiny LM trained from
    # scratch learns at larger rates, and a batch of 64 here.
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=600, learning_rate=2e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=1500, learning_rate=3e-3, turns=3))


@dataclass
class TrainedLlava:
    """The same LLaVA at three moments: before training, after stage 1, after stage 2."""

    initial: LlavaModel  # random projector + pretrained LM: what stage 1 starts from
    stage1: LlavaModel  # projector aligned on captions, LM untouched
    stage2: LlavaModel  # projector and LM tuned on instructions
    config: LlavaConfig
    metrics: dict = field(default_factory=dict)  # "stage1_losses", "stage2_losses", "stage1_seconds", "stage2_seconds"
    message: str = ""  # where it came from


def vision_tower(clip) -> VisionTransformer:
    """The image tower of whatever holds it: a ``load_or_train_tiny_clip()`` result, an open_clip CLIP, or the tower."""
    for candidate in (clip, getattr(clip, "visual", None), getattr(getattr(clip, "model", None), "visual", None)):
        if isinstance(candidate, VisionTransformer):
            return candidate
    raise TypeError(f"cannot find an open_clip VisionTransformer in {type(clip).__name__}")


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's weights: a cached LLaVA is valid only for the exact tower and LM it was trained on."""
    return state_dict_sha256(module.state_dict())[:16]


def build_llava(vision: VisionTransformer, lm: TrainedLM, config: LlavaConfig) -> LlavaModel:
    """A fresh LLaVA: the tower and a copy of the pretrained LM, the projector seeded by ``config.init_seed``."""
    torch.manual_seed(config.init_seed)
    return LlavaModel(vision, copy.deepcopy(lm.model), lm.tokenizer, config.projector_kind, config.feature_layer).eval()


def load_or_train_llava(clip=None, lm: TrainedLM | None = None, config: LlavaConfig = LlavaConfig(),
                        progress: bool = True) -> TrainedLlava:
    """LLaVA after each stage, from the cache or trained now (with progress bars) and cached.

    Args:
        clip: tiny CLIP (``load_or_train_tiny_clip()``'s result, a CLIP, or its tower); None loads lesson 02's.
        lm: the pretrained tiny LM; None loads (or trains) the default one.
        config: data, projector and the two stages' settings.
        progress: show progress bars while training.

    Training runs on :data:`~course_lib.runtime.TRAINING_THREADS` threads, so that every machine
    trains the same weights. The cache key holds the config, the data and text versions, the thread
    count and fingerprints of the tower's and the LM's weights; the file holds the projector after
    stage 1 and the projector + LM after stage 2.
    """
    if clip is None:
        from course_lib.tiny_clip import load_or_train_tiny_clip  # lesson 02
        clip = load_or_train_tiny_clip()
    lm = load_or_train_tiny_lm(progress=progress) if lm is None else lm
    vision = vision_tower(clip)
    settings = {"config": asdict(config), "data_version": DATA_VERSION, "text_version": TEXT_VERSION,
                "threads": TRAINING_THREADS, "vision": state_fingerprint(vision), "lm": state_fingerprint(lm.model)}
    path = cache_dir() / "llava" / f"llava-{settings_key(settings)}.pt"
    initial = build_llava(vision, lm, config)
    stage1, stage2 = copy.deepcopy(initial), copy.deepcopy(initial)
    tensors, description, problem = load_checkpoint(path, settings)
    if tensors is not None:
        stage1.projector.load_state_dict(tensors["stage1_projector"])
        stage2.projector.load_state_dict(tensors["stage2_projector"])
        stage2.lm.load_state_dict(tensors["stage2_lm"])
        return TrainedLlava(initial, stage1, stage2, config, description["metrics"],
                            f"LLaVA loaded from the cache ({path})")
    if problem:
        warnings.warn(f"the cached LLaVA {path} is not usable: {problem}; training it again", stacklevel=2)
    train = make_dataset(config.num_train_images, "train", seed=config.data_seed, image_size=vision.image_size[0])
    with torch_threads(TRAINING_THREADS):
        features = initial.image_features(train.images)  # (num_images, N, Dv), once: the tower is frozen
        start = time.perf_counter()
        stage1_losses = train_stage(stage1, features, caption_instructions(train.scenes), 1, config.stage1,
                                    progress)
        stage1_seconds = time.perf_counter() - start
        stage2.projector.load_state_dict(stage1.projector.state_dict())  # stage 2 starts where stage 1 ended
        stage2_data = question_instructions(train.scenes, config.data_seed, config.yes_no_per_image)
        stage2_losses = train_stage(stage2, features, stage2_data, 2, config.stage2, progress)
    metrics = {"stage1_losses": stage1_losses, "stage2_losses": stage2_losses, "stage1_seconds": stage1_seconds,
               "stage2_seconds": time.perf_counter() - start - stage1_seconds}
    save_checkpoint(path, {"stage1_projector": stage1.projector.state_dict(),
                           "stage2_projector": stage2.projector.state_dict(), "stage2_lm": stage2.lm.state_dict()},
                    {**settings, "metrics": metrics})
    return TrainedLlava(initial, stage1, stage2, config, metrics,
                        f"LLaVA trained in {metrics['stage1_seconds'] + metrics['stage2_seconds']:.0f} s "
                        f"and cached ({path})")
