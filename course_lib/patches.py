"""From an image to a ViT's input sequence: patches, flattening, and input embeddings.

Lecture: "ViT - Input embeddings". An image x in R^{H x W x C} is cut into non-overlapping
P x P patches p_i, taken in row-major order over the image (left to right, top to bottom). Each
patch is flattened "row by row", a pixel's C channel values kept together:

    f(p) in R^{P*P*C}                 (einops: b c (h p1) (w p2) -> b (h w) (p1 p2 c))

then mapped linearly and given a position:

    v_i = W f(p_i) + v_i^pos,   W in R^{D x (P*P*C)}

Reference: Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021), section 3.1.

Three equal ways to compute the same thing appear here, explicit first:
``patchify`` (reshape + permute, every step visible), ``patchify_einops`` (one pattern string),
and ``conv_patch_embedding`` (a Conv2d with kernel = stride = P, what ViT libraries use).
"""

from __future__ import annotations

import torch
import torchvision
from einops import rearrange
from torch import nn

from course_lib.runtime import data_dir

PHOTOS = ("cat", "coffee", "astronaut", "rocket")  # data/photos/<name>.jpg, 224 x 224, see data/README.md


def _validate(images: torch.Tensor, patch_size: int) -> tuple[int, int, int, int]:
    """Check ``images`` is a float (B, C, H, W) tensor that ``patch_size`` tiles; return its shape."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(f"patch_size must be an int, got {patch_size!r}")
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    if images.dim() != 4:
        hint = "; add a batch axis with images.unsqueeze(0)" if images.dim() == 3 else ""
        raise ValueError(f"images must have 4 axes (B, C, H, W), got shape {tuple(images.shape)}{hint}")
    if not torch.is_floating_point(images):
        raise TypeError(f"images must be floating point, got {images.dtype}; "
                        "convert with images.float() / 255 for uint8 pixels")
    B, C, H, W = images.shape
    for name, size in (("height", H), ("width", W)):
        if size % patch_size:
            lower, upper = size - size % patch_size, size - size % patch_size + patch_size
            raise ValueError(f"image {name} {size} is not divisible by patch_size {patch_size}; "
                             f"crop or pad to {lower or upper} or {upper}")
    return B, C, H, W


def load_photo(name: str, size: int | None = None) -> torch.Tensor:
    """One of the course's photos as a ``(1, 3, H, W)`` float image in [0, 1].

    Args:
        name: one of ``PHOTOS``.
        size: resize to ``size x size`` (antialiased) when given; the files are 224 x 224.
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    pixels = torchvision.io.decode_image(str(data_dir() / "photos" / f"{name}.jpg"))  # (3, 224, 224) uint8
    image = pixels.float().unsqueeze(0) / 255  # (1, 3, 224, 224) in [0, 1]
    if size is not None:
        image = nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    return image


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened patches, in row-major order, each flattened row by row.

    Args:
        images: ``(B, C, H, W)`` float tensor; H and W divisible by ``patch_size``.
        patch_size: P, the side of a square patch in pixels.

    Returns:
        ``(B, N, P*P*C)`` with ``N = (H/P) * (W/P)``. Patch ``n`` is the one in grid row
        ``n // (W/P)`` and column ``n % (W/P)``; inside it, element ``(r*P + c)*C + k`` is
        channel ``k`` of the pixel in row ``r``, column ``c`` of the patch.

    Example:
        >>> patchify(torch.rand(2, 3, 32, 32), 4).shape   # the lecture's 64 patches of 4x4
        torch.Size([2, 64, 48])
    """
    B, C, H, W = _validate(images, patch_size)
    P = patch_size
    rows, cols = H // P, W // P
    grid = images.reshape(B, C, rows, P, cols, P)  # (B, C, rows, P, cols, P)
    grid = grid.permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, P, P, C): pixel rows, then columns, channels last
    return grid.reshape(B, rows * cols, P * P * C)  # (B, N, P*P*C)


def patchify_einops(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The same as :func:`patchify`, written as one einops pattern (as vit-pytorch does)."""
    _validate(images, patch_size)
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Put flattened patches back together: the inverse of :func:`patchify`.

    Args:
        patches: ``(B, N, P*P*C)`` as returned by ``patchify``.
        patch_size: P.
        image_size: ``(H, W)`` of the original images.

    Returns:
        ``(B, C, H, W)`` images.
    """
    if not isinstance(patches, torch.Tensor) or patches.dim() != 3:
        shape = tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__
        raise ValueError(f"patches must be a (B, N, P*P*C) tensor, got {shape}")
    H, W = image_size
    _validate(torch.empty(1, 1, H, W), patch_size)  # same size rules as patchify
    P = patch_size
    B, N, patch_dim = patches.shape
    rows, cols = H // P, W // P
    if N != rows * cols or patch_dim % (P * P):
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not tile a {H}x{W} image with "
                         f"patch_size {P}: expected N = {rows * cols} and a last axis divisible by {P * P}")
    C = patch_dim // (P * P)
    grid = patches.reshape(B, rows, cols, P, P, C)  # (B, rows, cols, P, P, C)
    grid = grid.permute(0, 5, 1, 3, 2, 4)  # (B, C, rows, P, cols, P)
    return grid.reshape(B, C, H, W)


def patch_grid(image_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """How many patches fit down and across: ``(H/P, W/P)``; ValueError if P does not tile."""
    H, W = image_size
    _validate(torch.empty(1, 1, H, W), patch_size)
    return H // patch_size, W // patch_size


def conv_patch_embedding(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         patch_size: int) -> torch.Tensor:
    """``W f(p_i) + b`` for every patch, computed as a strided convolution (kernel = stride = P).

    A Conv2d whose kernel is exactly one patch and which moves one patch at a time computes one
    dot product per patch and output channel: the linear map of the lecture. Its weight is laid
    out ``(D, C, P, P)`` (channel first), while ``patchify`` flattens ``(P, P, C)``; the two agree
    once the weight is permuted (see :meth:`PatchEmbedding.conv_weight`).

    Args:
        images: ``(B, C, H, W)``.
        weight: ``(D, C, P, P)`` convolution kernel.
        bias: ``(D,)`` or None.
        patch_size: P.

    Returns:
        ``(B, N, D)`` patch embeddings, in the same order as ``patchify``.
    """
    _validate(images, patch_size)
    features = nn.functional.conv2d(images, weight, bias, stride=patch_size)  # (B, D, H/P, W/P)
    return features.flatten(2).transpose(1, 2)  # (B, N, D)


class PatchEmbedding(nn.Module):
    """ViT input embeddings: ``v_i = W f(p_i) + v_i^pos``, with an optional CLS token in front.

    Args:
        image_size: ``(H, W)``.
        patch_size: P.
        in_channels: C.
        embed_dim: D.
        cls_token: prepend a learned ``[CLS]`` vector (as ViT and CLIP do); it gets position 0.

    ``forward`` maps ``(B, C, H, W)`` to ``(B, N (+1), D)``.
    """

    def __init__(self, *, image_size: tuple[int, int], patch_size: int, in_channels: int = 3,
                 embed_dim: int = 64, cls_token: bool = True):
        super().__init__()
        rows, cols = patch_grid(image_size, patch_size)
        self.image_size = tuple(image_size)
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.num_patches = rows * cols
        self.proj = nn.Linear(patch_size * patch_size * in_channels, embed_dim)  # W and a bias
        self.cls_token = nn.Parameter(torch.randn(embed_dim) * 0.02) if cls_token else None
        num_positions = self.num_patches + (1 if cls_token else 0)
        self.pos_embedding = nn.Parameter(torch.randn(num_positions, embed_dim) * 0.02)  # v^pos

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = _validate(images, self.patch_size)
        if (H, W) != self.image_size or C != self.in_channels:
            raise ValueError(f"this PatchEmbedding expects images of shape (B, {self.in_channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(images.shape)}")
        tokens = self.proj(patchify(images, self.patch_size))  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(B, 1, -1)  # (B, 1, D)
            tokens = torch.cat([cls, tokens], dim=1)  # (B, N+1, D)
        return tokens + self.pos_embedding  # (B, N(+1), D), positions broadcast over the batch

    def conv_weight(self) -> torch.Tensor:
        """``proj.weight`` rearranged as the ``(D, C, P, P)`` kernel of the equivalent Conv2d."""
        P, C = self.patch_size, self.in_channels
        return rearrange(self.proj.weight, "d (p1 p2 c) -> d c p1 p2", p1=P, p2=P, c=C)
