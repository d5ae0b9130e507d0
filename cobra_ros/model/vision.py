"""The fused DINOv2 + SigLIP vision backbone, built with timm and loaded from local weight files.

Each tower sees the same image with its own normalisation, and contributes its second-to-last
block's patch tokens (prefix tokens dropped), as the release does; the two are concatenated per
patch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

from cobra_ros.model.config import CobraConfig, TowerConfig


def create_tower(cfg: TowerConfig, weights: Path | None = None) -> nn.Module:
    """A timm ViT for `cfg`; with `weights`, loaded from that local file by timm's own loader."""
    kwargs = dict(
        pretrained=weights is not None, num_classes=0, img_size=cfg.image_size, **cfg.overrides
    )
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
    return timm.create_model(cfg.timm_name, **kwargs)


class Preprocess(nn.Module):
    """uint8 RGB (b, H, W, 3) -> each tower's normalised (b, 3, S, S) input, as the release has it.

    The release transforms a PIL image with torchvision (dinosiglip_vit.py); so do we, one frame at
    a time on the CPU, then ToTensor and Normalize on the model's device:
      * resize-naive: Resize((S, S)), bicubic (both towers' timm configs say bicubic);
      * resize-crop: Resize(S) on the shorter side, then CenterCrop(S);
      * letterbox: pad to a square with the tower's mean colour as `int(mean * 255)` per channel
        (prismatic's LetterboxPad: the same border on both sides, so an odd difference leaves it
        one pixel short of square), then as resize-crop.
    A model trained on frames resized by torch (config `resample: "torch"`, the bundled one) keeps
    that resize-naive: antialiased bicubic, re-quantised to uint8.
    """

    def __init__(self, cfg: CobraConfig):
        super().__init__()
        self.size, self.strategy, self.resample = (
            cfg.dino.image_size,
            cfg.image_resize_strategy,
            cfg.resample,
        )
        self.fills = {}
        for name, tower in (("dino", cfg.dino), ("siglip", cfg.siglip)):
            mean, std = (
                torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)
                for v in (tower.mean, tower.std)
            )
            self.register_buffer(f"{name}_mean", mean, persistent=False)
            self.register_buffer(f"{name}_std", std, persistent=False)
            self.fills[name] = tuple(int(x * 255) for x in tower.mean)

    def resized(self, image: np.ndarray, fill: tuple | None = None) -> np.ndarray:
        """One HxWx3 uint8 frame -> the S x S x 3 uint8 frame a tower sees (`fill`: letterbox)."""
        size, strategy = self.size, self.strategy
        if image.shape[:2] == (size, size):
            return image  # every strategy leaves a frame of the model's size as it is
        if self.resample == "torch":
            x = (
                torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
                / 255.0
            )
            x = F.interpolate(
                x, size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )
            return (x.clamp(0.0, 1.0) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        pil = Image.fromarray(image)
        if strategy == "resize-naive":
            return np.asarray(TF.resize(pil, [size, size], InterpolationMode.BICUBIC))
        if strategy == "letterbox":
            (w, h), side = pil.size, max(pil.size)
            pad_w, pad_h = int((side - w) / 2), int((side - h) / 2)
            pil = TF.pad(pil, [pad_w, pad_h, pad_w, pad_h], fill=fill, padding_mode="constant")
        return np.asarray(TF.center_crop(TF.resize(pil, size, InterpolationMode.BICUBIC), size))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Float (b, 3, H, W) in [0, 1] from uint8 frames -> resized the same way (train.py)."""
        frames = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([self.resized(f, self.fills["dino"]) for f in frames])
        return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).float() / 255.0

    def forward(self, images) -> dict[str, torch.Tensor]:
        """`images`: uint8 (b, H, W, 3), a tensor on any device or an array; outputs on the
        buffers' device."""
        frames = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        device = self.dino_mean.device
        shared = None
        out = {}
        for name in ("dino", "siglip"):
            if self.strategy != "letterbox" and shared is not None:
                batch = shared  # the towers differ only in their letterbox fill
            else:
                batch = shared = np.stack([self.resized(f, self.fills[name]) for f in frames])
            x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0
            out[name] = (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")
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
        return {
            name: self._penultimate(tower, pixels[name].to(dtype))
            for name, tower in (("dino", self.dino), ("siglip", self.siglip))
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (b, H, W, 3) -> patch features (b, num_patches, d_dino + d_siglip)."""
        return torch.cat(list(self.per_tower(self.preprocess(images)).values()), dim=2)


def as_rgb_array(image) -> np.ndarray:
    """Accept an HxWx3 uint8 RGB array or a PIL image; anything else is a clear error."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"expected an HxWx3 uint8 RGB numpy array or a PIL image, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return image
