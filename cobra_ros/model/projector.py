"""Projectors from fused vision features to the LLM width, with the release's module layout.

`fused-gelu-mlp` is Cobra's default; `gelu-mlp`, `linear` and `fused-ldpnet` (LDPv2: token pooling
plus a depthwise-conv positional injection) are the variants the paper ablates. State-dict keys
match the release's `projector.N.*`.

`fused-ldpnet-pos` is ours: LDPv2 with a learned position embedding added to every patch before the
MLP. Pooling averages patches, so a pooled token keeps *what* its window holds but not *where* in
the window, unless the patch features already say where they are. Ours do not: on the bundled
model's towers, a fresh fused-ldpnet projector pooling to 2x2 tokens, with a linear head, places
blocks with 0.096 mean error (board-normalised) and orders two blocks left/right correctly 84% of
the time; fused-ldpnet-pos 0.047 and 96%; unpooled (8x8 tokens) 0.058 and 96% (`python
tools/position_probe.py --grids 2,8`). It starts at zero, so a fused-ldpnet model continued into it
computes the same until it learns.
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
    def __init__(
        self, kind: str, vision_dim: int, llm_dim: int, ldp_grid: int = 14, num_patches: int = 0
    ):
        super().__init__()
        self.kind = kind
        self.register_parameter("position", None)
        if kind == "fused-ldpnet-pos":
            self.position = nn.Parameter(torch.zeros(num_patches, vision_dim))
            kind = "fused-ldpnet"
        wide = 4 * vision_dim
        layers = {
            "linear": lambda: [nn.Linear(vision_dim, llm_dim)],
            "gelu-mlp": lambda: [
                nn.Linear(vision_dim, llm_dim),
                nn.GELU(),
                nn.Linear(llm_dim, llm_dim),
            ],
            "fused-gelu-mlp": lambda: [
                nn.Linear(vision_dim, wide),
                nn.GELU(),
                nn.Linear(wide, llm_dim),
                nn.GELU(),
                nn.Linear(llm_dim, llm_dim),
            ],
            "fused-ldpnet": lambda: [
                nn.Linear(vision_dim, wide),
                nn.GELU(),
                nn.Linear(wide, llm_dim),
                TokenPool(ldp_grid),
                PositionInject(llm_dim),
            ],
        }[kind]()
        self.projector = layers[0] if kind == "linear" else nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.position is not None:
            patches = patches + self.position
        return self.projector(patches)
