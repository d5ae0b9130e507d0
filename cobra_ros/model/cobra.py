"""The Cobra VLM: fused vision features -> projector -> Mamba, over the sequence [BOS, image, prompt]."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from cobra_ros.model.config import CobraConfig
from cobra_ros.model.mamba import MambaLM, MambaState, init_weights
from cobra_ros.model.projector import Projector
from cobra_ros.model.vision import FusedVision, create_tower


class Cobra(nn.Module):
    def __init__(self, cfg: CobraConfig, dino: nn.Module | None = None, siglip: nn.Module | None = None,
                 empty: bool = False):
        """`empty` builds the projector and LM without storage, for a loader that assigns checkpoint tensors."""
        super().__init__()
        self.cfg = cfg
        self.vision = FusedVision(cfg, dino if dino is not None else create_tower(cfg.dino),
                                  siglip if siglip is not None else create_tower(cfg.siglip))
        with torch.device("meta") if empty else contextlib.nullcontext():
            self.projector = Projector(cfg.projector_kind, cfg.vision_dim, cfg.llm.d_model, cfg.ldp_grid,
                                       cfg.num_patches)
            self.llm = MambaLM(cfg.llm)

    @property
    def device(self) -> torch.device:
        return self.llm.backbone.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.backbone.embedding.weight.dtype

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (b, H, W, 3) -> projected image embeddings (b, T, d_model)."""
        return self.projector(self.vision(images).to(self.dtype))

    def prefix_embeds(self, image_tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
        bos = self.llm.embed(torch.full((image_tokens.shape[0], 1), bos_id, device=image_tokens.device))
        return torch.cat([bos, image_tokens], dim=1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, bos_id: int, state: MambaState | None = None):
        """Teacher-forced logits over [BOS, image, ids] (training and reference checks)."""
        embeds = torch.cat([self.prefix_embeds(self.image_tokens(images), bos_id), self.llm.embed(ids)], dim=1)
        return self.llm(embeds, state)[0]


def random_cobra(cfg: CobraConfig, seed: int = 0) -> Cobra:
    """A Cobra with reproducible random weights (timm's own init for the towers, Mamba's for the LM)."""
    torch.manual_seed(seed)
    model = Cobra(cfg)
    init_weights(model.llm, torch.Generator().manual_seed(seed))
    return model.eval()
