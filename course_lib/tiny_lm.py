"""A tiny decoder-only language model and its word-level tokenizer: lesson 04's "pretrained LLM".

LLaVA joins a pretrained vision encoder to a pretrained LLM (LLaMA, Vicuna). A laptop CPU cannot
run either, so this module trains a GPT (Radford et al., 2018/2019; the layout of Karpathy's
nanoGPT) in seconds on text about the synthetic scenes of ``course_lib.shapes_data``:

    token ids (B, L) -> token embedding + position embedding -> num_layers x Block -> LayerNorm
    -> logits (B, L, V),     Block: x + attention(LN(x)), then x + MLP(LN(x)) (pre-norm, causal)

The tokenizer. Real LLMs use byte-pair encoding over ~32k-128k sub-words, learned from terabytes of
text. Our world has a closed language of ~60 words ("two small red circles on the left", "what
colour are the objects ?"), so a **word-level** vocabulary is both exact and honest: every word is
one token, a sentence of 7 words is 7 tokens (short sequences, fast training), and a word outside the
language is an error naming it instead of a silent <unk>. A BPE tokenizer here would add thousands
of embedding rows that never see a gradient. Four special tokens complete it: ``<pad>``, ``<bos>``
(start of a document), ``<eos>`` (the stop token generation halts on) and ``<image>`` (where LLaVA
splices in the image; the LM itself never sees it).

What the LM learns. Its corpus is chats in which the user describes a scene *in words* and asks
questions about it (``user: one large blue circle at the top . where are the objects ? assistant:
at the top <eos>``), and, like Vicuna (LLaMA fine-tuned on conversations, the LM of LLaVA), it is
trained on the assistant's replies only. So it knows the language and how to answer, but it has
never seen an image: the connector (``course_lib.connector``) must make image features readable
to it, and lesson 04 shows how far a connector alone gets (stage 1) before the LM is tuned too.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_lib.runtime import TRAINING_THREADS, cache_dir, load_checkpoint, save_checkpoint, settings_key, torch_threads
from course_lib.shapes_data import (COLOURS, COUNT_WORDS, COUNTS, DATA_VERSION, PLURALS, POSITION_PHRASES, POSITIONS,
                                    SHAPES, SIZES, Scene, caption, sample_scene)

# ----------------------------------------------------------------------------------------------
# The scene language: vocabulary, tokenizer, questions and answers

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>")
VOCABULARY: tuple[str, ...] = SPECIAL_TOKENS + (
    "user:", "assistant:", ".", ",", "?",
    *COUNT_WORDS.values(), *SIZES, *COLOURS, *SHAPES, *PLURALS.values(),
    "on", "at", "the", "left", "right", "top", "bottom",
    "what", "colour", "shape", "are", "is", "there", "how", "many", "where",
    "object", "objects", "describe", "image", "yes", "no",
)
QUESTION_KINDS = ("colour", "shape", "count", "position", "yes/no")  # what stage 2 asks about
CAPTION_PROMPT = "describe the image ."  # stage 1's only instruction (LLaVA: "Describe the image briefly.")
IGNORE_INDEX = -100  # a label the loss skips (PyTorch's cross-entropy default; LLaVA's constant)
TEXT_VERSION = 2  # bump when the language or the corpus changes, so that cached models are retrained


class WordTokenizer:
    """Text <-> token ids, one id per word of :data:`VOCABULARY`.

    Example:
        >>> tokenizer = WordTokenizer()
        >>> tokenizer.decode(tokenizer.encode("Two red circles?"))
        'two red circles ?'
    """

    def __init__(self, vocabulary: tuple[str, ...] = VOCABULARY):
        self.vocabulary = vocabulary
        self.token_to_id = {token: index for index, token in enumerate(vocabulary)}
        self.pad_id, self.bos_id, self.eos_id, self.image_id = (self.token_to_id[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def split(self, text: str) -> list[str]:
        """Lower-case and cut into words; any other character ("?", ".", "!") is a word of its own."""
        return re.findall(r"<\w+>|[a-z]+:?|\S", text.lower())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; a word outside the vocabulary raises ``ValueError`` naming it."""
        unknown = [word for word in self.split(text) if word not in self.token_to_id]
        if unknown:
            known = " ".join(t for t in self.vocabulary if t not in SPECIAL_TOKENS)
            raise ValueError(f"unknown word(s) {', '.join(map(repr, unknown))}: the tiny LM knows only the "
                             f"scene language ({len(self.vocabulary)} tokens): {known}")
        return [self.token_to_id[word] for word in self.split(text)]

    def decode(self, ids: list[int] | torch.Tensor, skip_special: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        words = [self.vocabulary[i] for i in ids]
        return " ".join(w for w in words if not (skip_special and w in SPECIAL_TOKENS))


def halves_holding(scene: Scene) -> tuple[str, ...]:
    """Every half of the image that holds all the objects, the scene's own ``position`` first.

    One object in a corner is both "on the left" and "at the top": the metadata names one half, the
    picture shows both. Yes/no questions about positions use this truth, and evaluation accepts any
    of these halves for "where are the objects ?".
    """
    reach = 1.05 * SIZES[scene.size]  # how far an object may extend from its centre (the triangle's apex)
    fits = {"left": lambda x, y: x + reach <= 0.5, "right": lambda x, y: x - reach >= 0.5,
            "top": lambda x, y: y + reach <= 0.5, "bottom": lambda x, y: y - reach >= 0.5}
    others = [p for p in POSITIONS if p != scene.position and all(fits[p](x, y) for x, y in scene.centres)]
    return (scene.position, *others)


def ask(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """One (question, answer) pair about ``scene``, written from its metadata.

    Kinds: ``"caption"`` (describe the image), ``"colour"``, ``"shape"``, ``"count"``, ``"position"``
    and ``"yes/no"`` (about the colour, the shape, the position or the count; true half of the time).

    Example:
        >>> from course_lib.shapes_data import make_scene
        >>> ask(make_scene("red", "circle", count=2), "count", np.random.default_rng(0))
        ('how many objects are there ?', 'two')
    """
    if kind == "caption":
        return CAPTION_PROMPT, caption(scene)
    if kind == "colour":
        return "what colour are the objects ?", scene.colour
    if kind == "shape":
        return "what shape are the objects ?", scene.shape
    if kind == "count":
        return "how many objects are there ?", COUNT_WORDS[scene.count]
    if kind == "position":
        return "where are the objects ?", POSITION_PHRASES[scene.position]
    if kind != "yes/no":
        raise ValueError(f"unknown question kind {kind!r}; choose caption or one of {', '.join(QUESTION_KINDS)}")
    truthful = bool(rng.integers(2))
    about = ("colour", "shape", "position", "count")[rng.integers(4)]

    def pick(options, true_values):  # a true value when truthful, a false one when not, at random
        choices = [option for option in options if (option in true_values) == truthful]
        return choices[rng.integers(len(choices))]

    if about == "colour":
        question = f"are the objects {pick(tuple(COLOURS), {scene.colour})} ?"
    elif about == "shape":
        question = f"are the objects {PLURALS[pick(SHAPES, {scene.shape})]} ?"
    elif about == "position":
        question = f"are the objects {POSITION_PHRASES[pick(POSITIONS, halves_holding(scene))]} ?"
    else:
        count = pick(COUNTS, {scene.count})
        question = "is there one object ?" if count == 1 else f"are there {COUNT_WORDS[count]} objects ?"
    return question, "yes" if truthful else "no"


def accepted_answers(scene: Scene, kind: str, answer: str) -> tuple[str, ...]:
    """Every answer true of the image: ``answer`` itself, and for positions (and captions) the other
    halves that also hold all the objects (see :func:`halves_holding`)."""
    if kind not in ("position", "caption"):
        return (answer,)
    phrases = [POSITION_PHRASES[p] for p in halves_holding(scene)]
    if kind == "position":
        return tuple(phrases)
    stem = answer[: -len(POSITION_PHRASES[scene.position])]  # the caption without its position phrase
    return tuple(stem + phrase for phrase in phrases)


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """The scene in words, for the LM's text-only corpus: the caption, or its facts in a random order.

    The shuffled form (``"small , on the left , red , two circles"``) makes the LM find each fact by
    what it is, not by where it stands, which is how it must later read the image tokens.
    """
    if rng.integers(2) == 0:
        return caption(scene)
    noun = scene.shape if scene.count == 1 else PLURALS[scene.shape]
    facts = [f"{COUNT_WORDS[scene.count]} {noun}", scene.size, scene.colour, POSITION_PHRASES[scene.position]]
    return " , ".join(facts[i] for i in rng.permutation(len(facts)))


def conversation(scene: Scene, num_turns: int, rng: np.random.Generator,
                 yes_no_share: float = 0.3) -> list[tuple[str, str]]:
    """A pretraining conversation: the user describes the scene *in words*, then asks ``num_turns``
    questions. Returns ``(user text, assistant reply)`` turns.

    A question is yes/no with probability ``yes_no_share`` (they are the hardest to learn: the
    answer depends on comparing two things), otherwise one of the other kinds or a caption.

    Example:
        >>> from course_lib.shapes_data import make_scene
        >>> conversation(make_scene("red", "circle", count=2), 1, np.random.default_rng(1))
        [('two large red circles on the left . what shape are the objects ?', 'circle')]
    """
    other_kinds = ("caption",) + tuple(kind for kind in QUESTION_KINDS if kind != "yes/no")
    description = describe(scene, rng)
    turns = []
    for index in range(num_turns):
        kind = "yes/no" if rng.random() < yes_no_share else other_kinds[rng.integers(len(other_kinds))]
        question, answer = ask(scene, kind, rng)
        turns.append((f"{description} . {question}" if index == 0 else question, answer))
    return turns


def encode_chat(turns: list[tuple[str, str]], tokenizer: WordTokenizer) -> tuple[list[int], list[int]]:
    """Token ids and labels of the chat template ``<bos> user: U1 assistant: R1 <eos> user: U2 ...``.

    Labels are the ids of the replies and of the ``<eos>`` after each (the stop token must be learned
    too), ``IGNORE_INDEX`` elsewhere: the model learns to answer, not to ask (Vicuna's recipe, and
    LLaVA's). A reply of ``None`` ends the text after ``assistant:``, ready for generation.
    """
    ids, labels = [tokenizer.bos_id], [IGNORE_INDEX]
    for user, reply in turns:
        prompt = tokenizer.encode(f"user: {user} assistant:")
        ids, labels = ids + prompt, labels + [IGNORE_INDEX] * len(prompt)
        if reply is not None:
            answer = tokenizer.encode(reply) + [tokenizer.eos_id]
            ids, labels = ids + answer, labels + answer
    return ids, labels


# ----------------------------------------------------------------------------------------------
# The model (nanoGPT's layout, with descriptive names)

@dataclass
class TinyLMConfig:
    vocab_size: int = len(VOCABULARY)  # V: the scene language's words + 4 special tokens
    context_length: int = 64  # the most positions one sequence may fill (image tokens included)
    width: int = 64  # D: the residual stream's width, which the connector must project to
    num_layers: int = 3  # transformer blocks
    num_heads: int = 4  # attention heads per block; head size = width // num_heads
    mlp_ratio: int = 4  # hidden width of each MLP = mlp_ratio * width


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position i sees positions <= i (and no padding)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        if config.width % config.num_heads:
            raise ValueError(f"width {config.width} is not divisible by num_heads {config.num_heads}")
        self.num_heads = config.num_heads
        self.qkv_proj = nn.Linear(config.width, 3 * config.width)
        self.out_proj = nn.Linear(config.width, config.width)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = hidden.shape
        nh, hs = self.num_heads, D // self.num_heads
        q, k, v = self.qkv_proj(hidden).split(D, dim=2)  # 3 x (B, L, D)
        q = q.view(B, L, nh, hs).transpose(1, 2)  # (B, nh, L, hs)
        k = k.view(B, L, nh, hs).transpose(1, 2)  # (B, nh, L, hs)
        v = v.view(B, L, nh, hs).transpose(1, 2)  # (B, nh, L, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, L, L)
        allowed = torch.ones(L, L, dtype=torch.bool, device=hidden.device).tril()  # (L, L): causal
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # (B, 1, L, L): no padding keys
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # (B, nh, L, L)
        out = (weights @ v).transpose(1, 2).reshape(B, L, D)  # (B, nh, L, hs) -> (B, L, D)
        return self.out_proj(out)


class MLP(nn.Module):
    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.down_proj = nn.Linear(config.mlp_ratio * config.width, config.width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(hidden)))


class Block(nn.Module):
    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.width)
        self.attention = CausalSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.width)
        self.mlp = MLP(config)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = hidden + self.attention(self.attention_norm(hidden), attention_mask)
        return hidden + self.mlp(self.mlp_norm(hidden))


class TinyLM(nn.Module):
    """A GPT: token + position embeddings, causal blocks, and an output layer tied to the embedding."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.context_length, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.width)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, token_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            token_ids: ``(B, L)`` int64, or None when ``inputs_embeds`` is given.
            inputs_embeds: ``(B, L, D)`` token embeddings (positions not yet added); LLaVA passes
                its spliced image + text sequence here.
            attention_mask: ``(B, L)``, 1 for real positions, 0 for padding; None = all real.

        Returns:
            ``(B, L, V)`` logits; position i scores the token at i + 1.
        """
        if (token_ids is None) == (inputs_embeds is None):
            raise TypeError("pass exactly one of token_ids (B, L) and inputs_embeds (B, L, D)")
        hidden = self.token_embedding(token_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        B, L, D = hidden.shape
        if L > self.config.context_length:
            raise ValueError(f"a sequence of {L} positions does not fit the LM's context of "
                             f"{self.config.context_length}; shorten it")
        hidden = hidden + self.position_embedding(torch.arange(L, device=hidden.device))  # (B, L, D)
        for block in self.blocks:
            hidden = block(hidden, attention_mask)
        return self.final_norm(hidden) @ self.token_embedding.weight.T  # (B, L, D) @ (D, V) -> (B, L, V)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of position i's logits against the label at i + 1, skipping ``ignore_index``.

    Labels are aligned with the inputs (Hugging Face's convention, which LLaVA follows): the shift
    happens here. Args: logits ``(B, L, V)``, labels ``(B, L)`` int64. Returns a scalar.
    """
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=ignore_index)


@dataclass
class Generation:
    """What greedy decoding produced for one sequence."""

    token_ids: list[int]  # generated ids, the stop token included when it was reached
    probabilities: list[float]  # the model's probability of each generated token
    stopped: bool  # True when the stop token ended it, False when max_new_tokens or the context did


@torch.no_grad()
def generate_greedy(lm: TinyLM, prompt_embeds: torch.Tensor, stop_id: int,
                    max_new_tokens: int = 10) -> list[Generation]:
    """Greedy decoding: append the most probable token until ``stop_id`` or ``max_new_tokens``.

    Args:
        lm: the language model.
        prompt_embeds: ``(B, L, D)`` token embeddings of B prompts of equal length L (text, or
            LLaVA's spliced image + text).
        stop_id: the token that ends an answer (``<eos>``).
        max_new_tokens: the most tokens generated per sequence.

    Returns:
        One :class:`Generation` per prompt. Deterministic: the same inputs give the same tokens.
    """
    B, L, D = prompt_embeds.shape
    if L >= lm.config.context_length:
        raise ValueError(f"the prompt fills {L} of the LM's {lm.config.context_length} positions and leaves no "
                         "room for an answer; shorten it")
    sequence = prompt_embeds
    results = [Generation([], [], False) for _ in range(B)]
    for _ in range(min(max_new_tokens, lm.config.context_length - L)):
        probabilities = lm(inputs_embeds=sequence)[:, -1].softmax(dim=-1)  # (B, V): the next token
        best_probability, best_id = probabilities.max(dim=-1)  # (B,), (B,)
        for result, token, probability in zip(results, best_id.tolist(), best_probability.tolist()):
            if not result.stopped:
                result.token_ids.append(token)
                result.probabilities.append(probability)
                result.stopped = token == stop_id
        if all(result.stopped for result in results):
            break
        sequence = torch.cat([sequence, lm.token_embedding(best_id)[:, None]], dim=1)  # (B, L + 1, D)
    return results


# ----------------------------------------------------------------------------------------------
# Pretraining on scene text, and the cache

@dataclass
class LMTrainConfig:
    num_conversations: int = 6000  # the text corpus: one random scene each (all 24 colour-shape pairs: it is text)
    turns: int = 3  # questions per conversation: more answers per token read, and the later positions trained
    yes_no_share: float = 0.4  # the share of yes/no questions, the hardest kind to learn
    steps: int = 600  # optimiser steps
    batch_size: int = 64  # conversations per step
    learning_rate: float = 3e-3  # AdamW peak, then cosine decay to 10 %
    seed: int = 0  # corpus, initialisation and batch order


def text_corpus(train: LMTrainConfig) -> list[list[tuple[str, str]]]:
    """The pretraining conversations, deterministic from ``train.seed``."""
    rng = np.random.default_rng(train.seed)
    return [conversation(sample_scene(rng, "all"), train.turns, rng, train.yes_no_share)
            for _ in range(train.num_conversations)]


def pad_token_batch(sequences: list[list[int]], labels: list[list[int]], pad_id: int):
    """Right-pad to the longest: ``(B, L)`` ids, ``(B, L)`` attention mask (1 = real), ``(B, L)`` labels."""
    L = max(map(len, sequences))
    ids = torch.tensor([s + [pad_id] * (L - len(s)) for s in sequences])  # (B, L)
    mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in sequences])  # (B, L)
    padded_labels = torch.tensor([t + [IGNORE_INDEX] * (L - len(t)) for t in labels])  # (B, L)
    return ids, mask, padded_labels


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 20, floor: float = 0.1):
    """Linear warm-up for ``warmup`` steps, then cosine decay from the peak to ``floor`` x peak."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_tiny_lm(config: TinyLMConfig = TinyLMConfig(), train: LMTrainConfig = LMTrainConfig(),
                  progress: bool = True) -> tuple[TinyLM, list[float]]:
    """Train a TinyLM from scratch on :func:`text_corpus`; returns the model (eval mode) and the losses.

    Each step takes ``batch_size`` random conversations, pads them, and minimises
    :func:`next_token_loss` on the assistant's replies.
    """
    tokenizer = WordTokenizer()
    generator = torch.Generator().manual_seed(train.seed)
    torch.manual_seed(train.seed)
    corpus = [encode_chat(turns, tokenizer) for turns in text_corpus(train)]
    longest = max(len(ids) for ids, _ in corpus)
    if longest > config.context_length:
        raise ValueError(f"a conversation of {longest} tokens does not fit the context of {config.context_length}; "
                         "lower turns or raise context_length")
    model = TinyLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, weight_decay=0.01)
    schedule = cosine_schedule(optimizer, train.steps)
    losses = []
    model.train()
    for _ in tqdm(range(train.steps), desc="pretraining the tiny LM", disable=not progress):
        picks = torch.randint(len(corpus), (train.batch_size,), generator=generator).tolist()
        ids, mask, labels = pad_token_batch([corpus[i][0] for i in picks], [corpus[i][1] for i in picks],
                                            tokenizer.pad_id)  # (B, L) each
        loss = next_token_loss(model(ids, attention_mask=mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


@dataclass
class TrainedLM:
    """A pretrained tiny LM, ready to use, with what made it."""

    model: TinyLM  # in eval mode
    tokenizer: WordTokenizer
    config: TinyLMConfig
    train_config: LMTrainConfig
    metrics: dict = field(default_factory=dict)  # "losses" per step, "train_seconds"
    message: str = ""  # where it came from: the cache, or trained (and why)


def load_or_train_tiny_lm(config: TinyLMConfig = TinyLMConfig(), train: LMTrainConfig = LMTrainConfig(),
                          progress: bool = True) -> TrainedLM:
    """The pretrained tiny LM from the cache, or trained now (a few seconds) and cached.

    It trains on :data:`~course_lib.runtime.TRAINING_THREADS` threads, so that every machine trains
    the same weights. The cache file's name holds a hash of the configs, the vocabulary,
    :data:`TEXT_VERSION`, the scenes' ``DATA_VERSION`` (the corpus is written from sampled scenes)
    and the thread count; its JSON sidecar holds the same settings and the file's SHA-256. A corrupt
    or mismatched file is retrained, with a warning that says why.
    """
    settings = {"config": asdict(config), "train": asdict(train), "vocabulary": list(VOCABULARY),
                "text_version": TEXT_VERSION, "data_version": DATA_VERSION, "threads": TRAINING_THREADS}
    path = cache_dir() / "tiny_lm" / f"tiny_lm-{settings_key(settings)}.pt"
    tensors, description, problem = load_checkpoint(path, settings)
    if tensors is not None:
        model = TinyLM(config)
        model.load_state_dict(tensors["model"])
        return TrainedLM(model.eval(), WordTokenizer(), config, train, description["metrics"],
                         f"tiny LM loaded from the cache ({path})")
    if problem:
        warnings.warn(f"the cached tiny LM {path} is not usable: {problem}; training it again", stacklevel=2)
    start = time.perf_counter()
    with torch_threads(TRAINING_THREADS):
        model, losses = train_tiny_lm(config, train, progress)
    metrics = {"losses": losses, "train_seconds": time.perf_counter() - start}
    save_checkpoint(path, {"model": model.state_dict()}, {**settings, "metrics": metrics})
    return TrainedLM(model, WordTokenizer(), config, train, metrics,
                     f"tiny LM trained in {metrics['train_seconds']:.0f} s and cached ({path})")


def reply(trained: TrainedLM, user_text: str, max_new_tokens: int = 10) -> str:
    """The LM's greedy reply to one user turn, e.g. a question about a scene described in words.

    Example:
        >>> lm = load_or_train_tiny_lm(progress=False)  # doctest: +SKIP
        >>> reply(lm, "two large red squares at the top . what colour are the objects ?")  # doctest: +SKIP
        'red'
    """
    ids, _ = encode_chat([(user_text, None)], trained.tokenizer)
    prompt_embeds = trained.model.token_embedding(torch.tensor([ids]))  # (1, L, D)
    generation = generate_greedy(trained.model, prompt_embeds, trained.tokenizer.eos_id, max_new_tokens)[0]
    return trained.tokenizer.decode(generation.token_ids)
