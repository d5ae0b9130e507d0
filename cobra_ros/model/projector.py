"""Projectors from fused vision features to the LLM width, with the release's module layout.

`fused-gelu-mlp` is Cobra's default; `gelu-mlp`, `linear` and `fused-ldpnet` (LDPv2: token pooling plus a
depthwise-conv positional injection) are the variants the paper ablates. State-dict keys match the
release's `projector.N.*`.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TokenPool(nn.Module):
    """Average-pool the square patch grid down to grid x grid tokens."""

    def __init__(self, grid: int):
        super().__init__()
        self.dwn = nn.Sequential(nn.AdaptiveAvgPool2d((grid, grid)))

    def forward(self, x):
        b, n, c = x.shape
        side = math.isqrt(n)
        x = self.dwn(x.transpose(1, 2).reshape(b, c, side, side))
        return x.flatten(2).transpose(1, 2)


class PositionInject(nn.Module):
    """Residual depthwise 3x3 conv over the token grid (a conditional position encoding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim))

    def forward(self, x):
        b, n, c = x.shape
        side = math.isqrt(n)
        grid = x.transpose(1, 2).reshape(b, c, side, side)
        return (self.peg(grid) + grid).flatten(2).transpose(1, 2)


class Projector(nn.Module):
    def __init__(self, kind: str, vision_dim: int, llm_dim: int, ldp_grid: int = 14):
        super().__init__()
        wide = 4 * vision_dim
        layers = {
            "linear": lambda: [nn.Linear(vision_dim, llm_dim)],
            "gelu-mlp": lambda: [nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)],
            "fused-gelu-mlp": lambda: [nn.Linear(vision_dim, wide), nn.GELU(), nn.Linear(wide, llm_dim), nn.GELU(),
                                       nn.Linear(llm_dim, llm_dim)],
            "fused-ldpnet": lambda: [nn.Linear(vision_dim, wide), nn.GELU(), nn.Linear(wide, llm_dim),
                                     TokenPool(ldp_grid), PositionInject(llm_dim)],
        }[kind]()
        self.kind = kind
        self.projector = layers[0] if kind == "linear" else nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.projector(patches)

