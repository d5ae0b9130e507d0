"""Model directories in the release layout, read and written offline.

    <dir>/config.json                       {"model": {model_id, vision_backbone_id,
                                              llm_backbone_id, arch_specifier, ...}}
    <dir>/checkpoints/latest-checkpoint.pt  {"model": {"projector": {...},
                                              "llm_backbone": {"llm.backbone...": ...}}}
    <dir>/vision/dino/model.safetensors     timm weights of vit_large_patch14_reg4_dinov2.lvd142m
    <dir>/vision/siglip/model.safetensors   timm weights of vit_so400m_patch14_siglip_384.webli
    <dir>/tokenizer/tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)

The first two are the files of the authors' release; the towers and tokenizer are what the release
fetches from the hub at run time, kept here so that nothing is downloaded. Checkpoints are read
with `torch.load(weights_only=True)`: a file holding any pickled object other than tensors is
refused.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

from cobra_ros.model.cobra import Cobra
from cobra_ros.model.config import CobraConfig, ConfigError
from cobra_ros.model.tokenizer import ChatTokenizer, TokenizerError
from cobra_ros.model.vision import create_tower

CONFIG, CHECKPOINT = "config.json", "checkpoints/latest-checkpoint.pt"
TOWER_FILES = {
    "dino": "vision/dino/model.safetensors",
    "siglip": "vision/siglip/model.safetensors",
}
TOKENIZER_DIR = "tokenizer"
LLM_PREFIX = "llm."  # the release's llm_backbone wraps the LM as `.llm`


class CheckpointError(ValueError):
    """A model directory that is incomplete, malformed or does not match its config."""


def save_model_dir(model: Cobra, tokenizer: ChatTokenizer, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps(model.cfg.to_json(), indent=2) + "\n")
    llm_state = {LLM_PREFIX + k: v for k, v in model.llm.state_dict().items()}
    torch.save(
        {"model": {"projector": model.projector.state_dict(), "llm_backbone": llm_state}},
        out / CHECKPOINT,
    )
    for name, rel in TOWER_FILES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        tower = getattr(model.vision, name)
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(out / rel))
    tokenizer.hf.save_pretrained(str(out / TOKENIZER_DIR))
    return out


def read_config(model_dir: str | Path) -> CobraConfig:
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected the release's config.json)")
    try:
        data = json.loads(path.read_text())
        return CobraConfig.from_json(data, str(path))
    except (json.JSONDecodeError, ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing (expected {CHECKPOINT} with projector and llm_backbone weights)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, it holds pickled objects other than tensors ({err})"
        ) from err
    except Exception as err:  # truncated or not a torch file at all
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(err).__name__}: {err})"
        ) from err
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not {"projector", "llm_backbone"} <= model.keys():
        raise CheckpointError(
            f"{path}: expected {{'model': {{'projector': ..., 'llm_backbone': ...}}}}"
        )
    return model["projector"], model["llm_backbone"]


def _load_into(module: torch.nn.Module, state: dict, source: str, assign: bool = False) -> None:
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"wrong shapes {wrong[:5]}" if wrong else "",
        ]
        raise CheckpointError(
            f"{source}: does not match the config: " + "; ".join(p for p in parts if p)
        )
    module.load_state_dict(state, assign=assign)


def load_model_dir(
    model_dir: str | Path, device="cpu", dtype=torch.float32
) -> tuple[Cobra, ChatTokenizer]:
    """Build the model `model_dir/config.json` describes; load every weight from local files."""
    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (expected a Cobra model directory)")
    cfg = read_config(root)
    try:
        tokenizer = ChatTokenizer.load(root / TOKENIZER_DIR)
    except (TokenizerError, OSError, ValueError) as err:
        raise CheckpointError(str(err)) from err
    if len(tokenizer) > cfg.llm.padded_vocab_size:
        raise CheckpointError(
            f"{root / TOKENIZER_DIR}: {len(tokenizer)} tokens, but the LM embeds only "
            f"{cfg.llm.padded_vocab_size}"
        )
    towers = {}
    for name, rel in TOWER_FILES.items():
        path = root / rel
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing (timm weights of {getattr(cfg, name).timm_name})"
            )
        try:
            towers[name] = create_tower(getattr(cfg, name), path)
        except (
            Exception
        ) as err:  # timm raises RuntimeError / KeyError / SafetensorError for bad files
            raise CheckpointError(
                f"{path}: cannot load {getattr(cfg, name).timm_name} ({err})"
            ) from err
    projector_state, llm_state = _read_checkpoint(root / CHECKPOINT)
    model = Cobra(
        cfg, towers["dino"], towers["siglip"], empty=True
    )  # the LM is the bulk: adopt the file's tensors
    ckpt = root / CHECKPOINT
    _load_into(model.projector, projector_state, f"{ckpt} [projector]", assign=True)
    llm_state = {k.removeprefix(LLM_PREFIX): v for k, v in llm_state.items()}
    _load_into(model.llm, llm_state, f"{ckpt} [llm_backbone]", assign=True)
    model.llm.lm_head.weight = model.llm.backbone.embedding.weight  # assign=True unties them
    return model.to(device=device, dtype=dtype).eval(), tokenizer
