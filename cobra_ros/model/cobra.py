"""The Cobra VLM: fused vision features -> projector -> Mamba.

The sequence is `[image, prompt]` as the release runs it, or `[BOS, image, prompt]` for a model
whose config says it was trained so (`CobraConfig.bos_before_image`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cobra_ros.model.config import CobraConfig
from cobra_ros.model.mamba import MambaLM, MambaState, init_weights
from cobra_ros.model.projector import Projector
from cobra_ros.model.vision import FusedVision, create_tower


class Cobra(nn.Module):
    def __init__(
        self,
        cfg: CobraConfig,
        dino: nn.Module | None = None,
        siglip: nn.Module | None = None,
        empty: bool = False,
    ):
        """`empty` builds the projector and LM without storage, for a loader that assigns
        checkpoint tensors."""
        super().__init__()
        self.cfg = cfg
        self.vision = FusedVision(
            cfg,
            dino if dino is not None else create_tower(cfg.dino),
            siglip if siglip is not None else create_tower(cfg.siglip),
        )
        with torch.device("meta") if empty else contextlib.nullcontext():
            self.projector = Projector(
                cfg.projector_kind, cfg.vision_dim, cfg.llm.d_model, cfg.ldp_grid, cfg.num_patches
            )
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

    def prefix_embeds(self, image_tokens: torch.Tensor, bos_id: int | None = None) -> torch.Tensor:
        """What comes before the prompt: the image tokens, after BOS if the model was trained so"""
        if not self.cfg.bos_before_image:
            return image_tokens
        if bos_id is None:
            raise ValueError(
                f"{self.cfg.model_id} was trained with a BOS before the image: give bos_id"
            )
        batch = image_tokens.shape[0]
        bos = self.llm.embed(torch.full((batch, 1), bos_id, device=image_tokens.device))
        return torch.cat([bos, image_tokens], dim=1)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        bos_id: int | None = None,
        state: MambaState | None = None,
    ):
        """Teacher-forced logits over the prefix then `ids` (training and reference checks)."""
        prefix = self.prefix_embeds(self.image_tokens(images), bos_id)
        embeds = torch.cat([prefix, self.llm.embed(ids)], dim=1)
        return self.llm(embeds, state)[0]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def random_cobra(cfg: CobraConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> Cobra:
    """A Cobra with reproducible random weights (timm's own init for the towers, Mamba's for the
    LM).

    Built and initialised in `dtype` directly: the full model in float32 first would need twice the
    memory of a bfloat16 one (cobra-3b: 14.5 GiB instead of ~7)."""
    torch.manual_seed(seed)
    with default_dtype(dtype):
        model = Cobra(cfg)
        init_weights(model.llm, torch.Generator().manual_seed(seed))
    return model.eval()
