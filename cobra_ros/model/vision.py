"""The fused DINOv2 + SigLIP vision backbone, built with timm and loaded from local weight files.

Each tower sees the same image with its own normalisation, and contributes its second-to-last block's
patch tokens (prefix tokens dropped), as the release does; the two are concatenated per patch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from cobra_ros.model.config import CobraConfig, TowerConfig


def create_tower(cfg: TowerConfig, weights: Path | None = None) -> nn.Module:
    """A timm ViT for `cfg`; with `weights`, loaded from that local file through timm's own loader."""
    kwargs = dict(pretrained=weights is not None, num_classes=0, img_size=cfg.image_size, **cfg.overrides)
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
    return timm.create_model(cfg.timm_name, **kwargs)


class Preprocess(nn.Module):
    """uint8 RGB (b, H, W, 3) -> each tower's normalised (b, 3, S, S) input.

    resize-naive squashes to S x S (bicubic, antialiased like PIL); letterbox first pads to a square with
    each tower's mean colour.
    """

    def __init__(self, cfg: CobraConfig):
        super().__init__()
        self.size, self.strategy = cfg.dino.image_size, cfg.image_resize_strategy
        for name, tower in (("dino", cfg.dino), ("siglip", cfg.siglip)):
            self.register_buffer(f"{name}_mean", torch.tensor(tower.mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"{name}_std", torch.tensor(tower.std).view(1, 3, 1, 1), persistent=False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
            x = (x.clamp(0.0, 1.0) * 255).round() / 255  # the release resizes PIL uint8 images
        return x

    @staticmethod
    def _letterbox(x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        side = max(h, w)
        pad = ((side - w) // 2, side - w - (side - w) // 2, (side - h) // 2, side - h - (side - h) // 2)
        return F.pad(x - fill, pad) + fill

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        shared = None if self.strategy == "letterbox" else self._resize(x)
        out = {}
        for name in ("dino", "siglip"):
            mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
            tower_x = shared if shared is not None else self._resize(self._letterbox(x, mean))
            out[name] = (tower_x - mean) / std
        return out


class FusedVision(nn.Module):
    def __init__(self, cfg: CobraConfig, dino: nn.Module, siglip: nn.Module):
        super().__init__()
        self.preprocess = Preprocess(cfg)
        self.dino, self.siglip = dino, siglip

    @staticmethod
    def _penultimate(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return vit.get_intermediate_layers(x, n=[len(vit.blocks) - 2])[0]

    def per_tower(self, pixels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`preprocess` output -> each tower's penultimate-block patch features, by tower name."""
        dtype = next(self.dino.parameters()).dtype
        return {name: self._penultimate(tower, pixels[name].to(dtype))
                for name, tower in (("dino", self.dino), ("siglip", self.siglip))}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (b, H, W, 3) on the model's device -> patch features (b, num_patches, d_dino + d_siglip)."""
        return torch.cat(list(self.per_tower(self.preprocess(images)).values()), dim=2)


def as_rgb_array(image) -> np.ndarray:
    """Accept an HxWx3 uint8 RGB array or a PIL image; anything else is a clear error."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an HxWx3 uint8 RGB numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return image
