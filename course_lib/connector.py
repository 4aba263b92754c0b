"""The cross-modal connector of LLaVA: project image features to the LM's width and splice them in.

The lecture's "four components of a simple and standard design" of a vision-language model:

    image (B, 3, H, W) -> pretrained ViT, frozen -> patch features (B, N, Dv)
                       -> connector (linear or MLP, randomly initialised) -> image tokens (B, N, D)
                       -> placed among the text's token embeddings -> pretrained decoder-only LM

LLaVA (Liu et al., 2023, *Visual Instruction Tuning*) used one linear layer; LLaVA-1.5 (Liu et al.,
2024, *Improved Baselines with Visual Instruction Tuning*) a two-layer MLP, ``"mlp2x_gelu"``. The
prompt holds an ``<image>`` placeholder; the splice replaces it by the N image tokens, and the labels
mark every image and prompt position with ``IGNORE_INDEX = -100`` so that only the answer is learned:

    tokens   <bos> user: [img_1 ... img_N] what colour are the objects ? assistant:  red  <eos>
    labels   -100  -100   -100  ...  -100  -100 ...                       -100       red  <eos>

Also here: which parameters train in LLaVA's two stages, and what the alternative design costs:
Llama 3.2 lets the LM *cross-attend* to the image from new layers instead of reading it as a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from course_lib.tiny_lm import IGNORE_INDEX  # -100: the label the loss skips (LLaVA's constant)

PROJECTOR_KINDS = ("linear", "mlp2x_gelu")


def build_projector(kind: str, vision_dim: int, lm_dim: int) -> nn.Module:
    """LLaVA's connector: maps each patch feature to the LM's input width.

    Args:
        kind: ``"linear"`` (LLaVA: ``W v + b``) or ``"mlp2x_gelu"`` (LLaVA-1.5:
            ``W2 GELU(W1 v + b1) + b2``, both layers ``lm_dim`` wide).
        vision_dim: Dv, the width of the vision encoder's features.
        lm_dim: D, the width of the LM's token embeddings.

    Returns:
        A module mapping ``(..., Dv)`` to ``(..., D)``, freshly (randomly) initialised.

    Example:
        >>> build_projector("mlp2x_gelu", 64, 96)(torch.zeros(2, 16, 64)).shape
        torch.Size([2, 16, 96])
    """
    for name, value in (("vision_dim", vision_dim), ("lm_dim", lm_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if kind == "linear":
        return nn.Linear(vision_dim, lm_dim)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))
    raise ValueError(f"unknown projector kind {kind!r}; choose one of {', '.join(map(repr, PROJECTOR_KINDS))}")


def projector_parameters(kind: str, vision_dim: int, lm_dim: int) -> int:
    """How many parameters :func:`build_projector` creates, by formula (weights + biases)."""
    if kind == "linear":
        return vision_dim * lm_dim + lm_dim
    if kind == "mlp2x_gelu":
        return (vision_dim * lm_dim + lm_dim) + (lm_dim * lm_dim + lm_dim)
    raise ValueError(f"unknown projector kind {kind!r}; choose one of {', '.join(map(repr, PROJECTOR_KINDS))}")


# ----------------------------------------------------------------------------------------------
# The splice

@dataclass
class SplicedSequence:
    """One training sequence as the LM receives it, all three aligned position by position."""

    embeds: torch.Tensor  # (L, D): text token embeddings with the image tokens in place of <image>
    attention_mask: torch.Tensor  # (L,) int64: 1 = a real position, 0 = padding
    labels: torch.Tensor  # (L,) int64: the token to learn at each position, IGNORE_INDEX where nothing is


def splice_conversation(input_ids: torch.Tensor, labels: torch.Tensor, image_embeds: torch.Tensor,
                        token_embedding: nn.Embedding, image_token_id: int) -> SplicedSequence:
    """Replace the one ``<image>`` token of a tokenised conversation by the image tokens (LLaVA's splice).

    Args:
        input_ids: ``(L0,)`` int64, the whole conversation, holding exactly one ``image_token_id``.
        labels: ``(L0,)`` int64, the ids on the assistant's replies, IGNORE_INDEX on everything the
            user said (``course_lib.tiny_lm.encode_chat`` builds both).
        image_embeds: ``(N, D)``, the projected image features.
        token_embedding: the LM's embedding table (V, D).
        image_token_id: the id of ``<image>``.

    Returns:
        A :class:`SplicedSequence` of length ``L = L0 - 1 + N``: the text's embeddings with the N image
        vectors where ``<image>`` was, the labels with N IGNORE_INDEX in the same place, mask all ones.
    """
    positions = (input_ids == image_token_id).nonzero().flatten().tolist()
    if len(positions) != 1:
        raise ValueError(f"the prompt must hold exactly one <image> token (id {image_token_id}), it holds "
                         f"{len(positions)}: {input_ids.tolist()}")
    position = positions[0]
    N, D = image_embeds.shape
    text_embeds = token_embedding(input_ids)  # (L0, D)
    embeds = torch.cat([text_embeds[:position], image_embeds, text_embeds[position + 1:]])  # (L0 - 1 + N, D)
    image_labels = torch.full((N,), IGNORE_INDEX, dtype=torch.int64)  # nothing to predict at an image position
    labels = torch.cat([labels[:position], image_labels, labels[position + 1:]])  # (L0 - 1 + N,)
    attention_mask = torch.ones(embeds.shape[0], dtype=torch.int64)  # every position is real until padded
    return SplicedSequence(embeds, attention_mask, labels)


def splice_image(prompt_ids: torch.Tensor, answer_ids: torch.Tensor, image_embeds: torch.Tensor,
                 token_embedding: nn.Embedding, image_token_id: int) -> SplicedSequence:
    """One question, one answer: the prompt with its ``<image>`` replaced by the image tokens, then the answer.

    Args:
        prompt_ids: ``(Lp,)`` int64, holding exactly one ``image_token_id``.
        answer_ids: ``(La,)`` int64, the reply to learn, ending with the stop token.
        image_embeds: ``(N, D)``, the projected image features.
        token_embedding: the LM's embedding table (V, D).
        image_token_id: the id of ``<image>``.

    Returns:
        A :class:`SplicedSequence` of length ``L = Lp - 1 + N + La``; labels are IGNORE_INDEX on the
        ``Lp - 1 + N`` prompt and image positions and the answer's ids after them.

    Example:
        >>> table = nn.Embedding(10, 4)
        >>> out = splice_image(torch.tensor([1, 3, 5]), torch.tensor([7, 2]), torch.zeros(6, 4), table, 3)
        >>> out.embeds.shape, out.labels.tolist()
        (torch.Size([10, 4]), [-100, -100, -100, -100, -100, -100, -100, -100, 7, 2])
    """
    prompt_labels = torch.full((len(prompt_ids),), IGNORE_INDEX, dtype=torch.int64)  # the prompt is given
    return splice_conversation(torch.cat([prompt_ids, answer_ids]), torch.cat([prompt_labels, answer_ids]),
                               image_embeds, token_embedding, image_token_id)


def pad_batch(sequences: list[SplicedSequence]) -> SplicedSequence:
    """Stack sequences of different lengths, padding on the right.

    Padding gets zero embeddings, attention mask 0 (no position attends to it) and IGNORE_INDEX
    labels (no loss). Returns a :class:`SplicedSequence` with a batch axis: ``(B, L, D)``,
    ``(B, L)``, ``(B, L)`` with L the longest sequence.
    """
    L = max(sequence.embeds.shape[0] for sequence in sequences)
    D = sequences[0].embeds.shape[1]
    embeds, masks, labels = [], [], []
    for sequence in sequences:
        missing = L - sequence.embeds.shape[0]
        embeds.append(torch.cat([sequence.embeds, sequence.embeds.new_zeros(missing, D)]))  # (L, D)
        masks.append(torch.cat([sequence.attention_mask, torch.zeros(missing, dtype=torch.int64)]))  # (L,)
        labels.append(torch.cat([sequence.labels, torch.full((missing,), IGNORE_INDEX, dtype=torch.int64)]))
    return SplicedSequence(torch.stack(embeds), torch.stack(masks), torch.stack(labels))


# ----------------------------------------------------------------------------------------------
# What trains in each stage

def set_trainable(model: nn.Module, stage: int) -> None:
    """LLaVA's two stages, on a model with ``vision``, ``projector`` and ``lm`` submodules.

    Stage 1 (feature alignment, on captions): only the projector trains; the vision tower and the
    LM are frozen. Stage 2 (visual instruction tuning): the projector and the LM train. The vision
    tower stays frozen in both.
    """
    if stage not in (1, 2):
        raise ValueError(f"LLaVA has training stages 1 and 2, got {stage!r}")
    model.vision.requires_grad_(False)
    model.projector.requires_grad_(True)
    model.lm.requires_grad_(stage == 2)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameters_with_gradient(model: nn.Module) -> list[str]:
    """Names of the parameters that received a non-zero gradient in the last ``backward``."""
    return [name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]


# ----------------------------------------------------------------------------------------------
# The other design: cross-attention (Flamingo; Llama 3.2's image adapter)

class GatedCrossAttentionLayer(nn.Module):
    """A layer inserted between an LM's blocks, where text positions attend to the image features.

    ``h = h + tanh(g_attn) * CrossAttention(LN(h), image)`` then ``h = h + tanh(g_mlp) * MLP(LN(h))``.
    The gates start at 0, so the pretrained LM is unchanged until training opens them (Flamingo;
    Llama 3.2's cross-attention layers have the same shape). The text sequence keeps its length:
    no image tokens enter it; the price is a full layer of new parameters.
    """

    def __init__(self, lm_dim: int, vision_dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.attention_norm = nn.LayerNorm(lm_dim)
        self.attention = nn.MultiheadAttention(lm_dim, num_heads, kdim=vision_dim, vdim=vision_dim, batch_first=True)
        self.attention_gate = nn.Parameter(torch.zeros(1))
        self.mlp_norm = nn.LayerNorm(lm_dim)
        self.mlp = nn.Sequential(nn.Linear(lm_dim, mlp_ratio * lm_dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * lm_dim, lm_dim))
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, hidden: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """hidden ``(B, L, D)``, image_features ``(B, N, Dv)`` -> ``(B, L, D)``."""
        query = self.attention_norm(hidden)  # (B, L, D)
        attended, _ = self.attention(query, image_features, image_features, need_weights=False)  # (B, L, D)
        hidden = hidden + torch.tanh(self.attention_gate) * attended
        return hidden + torch.tanh(self.mlp_gate) * self.mlp(self.mlp_norm(hidden))


def cross_attention_layer_parameters(lm_dim: int, vision_dim: int, ffn_dim: int, kv_dim: int | None = None,
                                     swiglu: bool = False, bias: bool = True) -> int:
    """Parameters of one cross-attention layer with its own feed-forward network, by formula.

    Query and output projections are ``lm_dim x lm_dim``; key and value map ``vision_dim -> kv_dim``
    (``kv_dim < lm_dim`` with grouped-query attention, as in Llama 3); the FFN has 2 matrices
    (GELU) or 3 (SwiGLU, Llama's); two norms and two gates. With ``bias=True`` (our tiny layers:
    :class:`GatedCrossAttentionLayer`) every linear map has a bias and the norms are LayerNorms;
    with ``bias=False`` (Llama) nothing has a bias and the norms are RMSNorms (a weight only).
    """
    kv_dim = lm_dim if kv_dim is None else kv_dim
    attention = 2 * lm_dim * lm_dim + 2 * vision_dim * kv_dim  # W_q, W_o; W_k, W_v
    ffn = (3 if swiglu else 2) * lm_dim * ffn_dim
    norms = 2 * lm_dim * (2 if bias else 1)
    biases = (2 * lm_dim + 2 * kv_dim + ffn_dim + lm_dim) if bias else 0
    return attention + ffn + norms + biases + 2  # + the two gates
