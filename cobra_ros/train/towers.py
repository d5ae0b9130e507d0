"""Stage 1: the vision towers trained on where the blocks are (standing in for the pretrained
DINOv2 / SigLIP the paper starts from), and what stage 2 reads from them."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.model.cobra import Cobra
from cobra_ros.train.config import TrainConfig
from cobra_ros.train.data import BLOCK_INDEX, patch_targets, scene_table


@torch.no_grad()
def tower_features(model: Cobra, images: np.ndarray) -> torch.Tensor:
    """The frozen towers run once per training image; stage 2 only trains what comes after them."""
    return torch.cat(
        [
            model.vision(torch.from_numpy(chunk))
            for chunk in np.array_split(images, max(1, len(images) // 64))
        ]
    )


def patch_loss(out: torch.Tensor, present: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Stage 1's loss of a per-patch head: which blocks have their centre in each patch
    (cross-entropy, x10) and where in the patch (L1, over the patches that hold a block).

    out: (N, patches, blocks + 2); present, offset: patch_targets'."""
    has = present.amax(-1, keepdim=True)
    place = F.l1_loss(torch.sigmoid(out[..., -2:]), offset, reduction="none") * has
    return (F.binary_cross_entropy_with_logits(out[..., :-2], present) * 10
            + place.sum() / has.sum())


def pretrain_towers(model: Cobra, images: np.ndarray, truths: list, cfg: TrainConfig, log=print):
    """Stage 1, standing in for the pretrained DINOv2/SigLIP the paper starts from: dense
    supervision of the penultimate-block patch features Cobra reads (which blocks sit in each
    patch, and where), through a throwaway linear head per tower. The first cfg.probe_steps
    train only the heads, so that towers trained before (a continuation) are not moved by random
    heads."""
    grid = model.cfg.dino.image_size // 14
    present, offset = patch_targets(truths, grid, model.cfg.dino.image_size)
    towers = [model.vision.dino, model.vision.siglip]
    heads = nn.ModuleDict({name: nn.Linear(t.embed_dim, len(questions.ALL_BLOCKS) + 2)
                           for name, t in zip(("dino", "siglip"), towers)})
    for tower in towers:
        tower.requires_grad_(True).train()
    opt = torch.optim.AdamW(
        [{"params": [p for t in towers for p in t.parameters()], "head": False},
         {"params": list(heads.parameters()), "head": True}],
        lr=cfg.tower_lr, weight_decay=0.01,
    )
    rng = np.random.default_rng(cfg.seed + 1)
    bar = tqdm(range(cfg.tower_steps), desc="towers", unit="step")
    for step in bar:
        lr = cfg.tower_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.tower_steps))
        for group in opt.param_groups:
            group["lr"] = lr if group["head"] or step >= cfg.probe_steps else 0.0
        idx = rng.choice(len(images), cfg.tower_batch, replace=False)
        pixels = model.vision.preprocess(torch.from_numpy(images[idx]))
        loss = 0.0
        for name, features in model.vision.per_tower(pixels).items():
            loss = loss + patch_loss(heads[name](features), present[idx], offset[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    log(f"towers pretrained: final loss {loss.item():.3f}")
    return heads


@torch.no_grad()
def standardise_projector_input(model: Cobra, features: torch.Tensor) -> None:
    """Data-dependent init: fold each feature dimension's mean and std over the training patches
    into the projector's first linear layer, so it starts on standardised features.

    The langtable towers' patch features are large (norm ~85, per-dimension std ~6) with dimensions
    of very different scales; without this the projector's first steps are spent rescaling them.
    """
    first = (
        model.projector.projector[0]
        if model.projector.kind != "linear"
        else model.projector.projector
    )
    flat = features.flatten(0, -2).float()
    mean, std = flat.mean(0), flat.std(0).clamp(min=1e-3)
    first.weight /= std
    first.bias -= first.weight @ mean


def presence_accuracy(patch_logits: torch.Tensor, truths: list, blocks=questions.BLOCK_8) -> float:
    """Balanced accuracy of "is this block in the image?" read as any patch's logit > 0, over
    `blocks`.

    patch_logits: (N, patches, len(ALL_BLOCKS)) from a stage-1 head. Balanced, because most of the
    8 blocks are in most scenes: always answering "present" already scores ~0.76 plain accuracy.
    """
    cols = [BLOCK_INDEX[b] for b in blocks]
    truth = scene_table(truths)[0][:, cols] > 0
    said = patch_logits[..., cols].amax(1) > 0
    hit = (said & truth).sum() / truth.sum().clamp(min=1)
    reject = (~said & ~truth).sum() / (~truth).sum().clamp(min=1)
    return float((hit + reject) / 2)


@torch.no_grad()
def tower_presence(model: Cobra, heads, images: np.ndarray, truths: list) -> dict[str, float]:
    """presence_accuracy of each tower's stage-1 head on `images`: how well each sees blocks."""
    logits = {"dino": [], "siglip": []}
    for chunk in np.array_split(images, max(1, len(images) // 64)):
        pixels = model.vision.preprocess(torch.from_numpy(chunk))
        for name, features in model.vision.per_tower(pixels).items():
            logits[name].append(heads[name](features))
    return {name: presence_accuracy(torch.cat(parts), truths) for name, parts in logits.items()}
