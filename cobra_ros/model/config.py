"""Model configuration: the released Cobra ids, and small presets of the same architecture.

A model directory's `config.json` has the release's `{"model": {...}}` block. Released ids are
resolved from the registries below; models we build ourselves also carry a `"cobra_ros"` block with
the exact shapes, so one loader reads both.

The LM's input sequence is a property of the model. The release feeds `[image tokens, prompt]`: its
GPT-NeoX tokenizer adds no BOS, and Cobra dropped prismatic's `[BOS, patches, ...]` for that reason
(cobra/models/vlms/cobra.py). Our own models were trained on `[<|endoftext|>, image, prompt]`;
their block says so (`bos_before_image`), and a block written before that field existed means the
same. Likewise the resampler: the release resizes PIL images (`"pil"`); the bundled model was
trained on frames resized by torch's antialiased bicubic (`"torch"`), which a block without the
field means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
ARCH_SPECIFIERS = ("linear", "gelu-mlp", "fused-gelu-mlp", "fused-ldpnet", "fused-ldpnet-pos")
RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")
RESAMPLERS = ("pil", "torch")


class ConfigError(ValueError):
    """A config.json that names unknown ids or is missing fields."""


@dataclass(frozen=True)
class TowerConfig:
    """One vision tower: a timm architecture, its input size, and its own preprocessing."""

    timm_name: str
    image_size: int
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    overrides: dict = field(
        default_factory=dict
    )  # timm model kwargs (embed_dim, depth, ...) for small towers

    @property
    def embed_dim(self) -> int:
        return self.overrides.get("embed_dim", _TIMM_WIDTHS.get(self.timm_name.split(".")[0], 0))


@dataclass(frozen=True)
class MambaConfig:
    d_model: int
    n_layer: int
    # tokenizer vocabulary; the embedding is padded up to a multiple of pad_vocab_size_multiple
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    norm_epsilon: float = 1e-5
    pad_vocab_size_multiple: int = 8
    residual_in_fp32: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return (self.vocab_size + m - 1) // m * m


@dataclass(frozen=True)
class CobraConfig:
    model_id: str
    vision_backbone_id: str
    llm_backbone_id: str
    arch_specifier: str
    dino: TowerConfig
    siglip: TowerConfig
    llm: MambaConfig
    image_resize_strategy: str = "resize-naive"
    llm_max_length: int = 2048
    ldp_grid: int = 14  # token grid after LDPv2's pooling (fused-ldpnet[-pos] only)
    bos_before_image: bool = False  # the release's sequence has no BOS; ours was trained with one
    resample: str = (
        "pil"  # "pil": the release's torchvision-on-PIL resize; "torch": ours until now
    )
    # what a model we trained was taught (e.g. "yes_no", "describe", "locate"); empty: unknown
    tasks: tuple = ()

    @property
    def projector_kind(self) -> str:
        # The release prefixes training-stage tags ("no-align+fused-gelu-mlp"); the projector is
        # the last part.
        kind = self.arch_specifier.split("+")[-1]
        if kind not in ARCH_SPECIFIERS:
            raise ConfigError(
                f"unknown arch_specifier {self.arch_specifier!r}; "
                f"expected one of {ARCH_SPECIFIERS}"
            )
        return kind

    @property
    def vision_dim(self) -> int:
        return self.dino.embed_dim + self.siglip.embed_dim

    @property
    def num_patches(self) -> int:
        return (self.dino.image_size // 14) ** 2

    def to_json(self) -> dict:
        """The release's `{"model": ...}` block, plus our exact shapes under "cobra_ros"."""
        release = dict(
            model_id=self.model_id,
            vision_backbone_id=self.vision_backbone_id,
            llm_backbone_id=self.llm_backbone_id,
            arch_specifier=self.arch_specifier,
            image_resize_strategy=self.image_resize_strategy,
            llm_max_length=self.llm_max_length,
        )
        ours = dict(
            dino=asdict(self.dino),
            siglip=asdict(self.siglip),
            llm=asdict(self.llm),
            ldp_grid=self.ldp_grid,
            bos_before_image=self.bos_before_image,
            resample=self.resample,
        )
        if self.tasks:
            ours["tasks"] = list(self.tasks)
        return {"model": release, "cobra_ros": ours}

    @classmethod
    def from_json(cls, data: dict, source: str = "config.json") -> "CobraConfig":
        if "model" not in data:
            raise ConfigError(f"{source}: no 'model' block (expected the Cobra release layout)")
        m = data["model"]
        missing = [
            k
            for k in ("model_id", "vision_backbone_id", "llm_backbone_id", "arch_specifier")
            if k not in m
        ]
        if missing:
            raise ConfigError(f"{source}: 'model' block lacks {missing}")
        ours = data.get("cobra_ros")
        if ours:
            dino, siglip = (
                TowerConfig(**{**t, "mean": tuple(t["mean"]), "std": tuple(t["std"])})
                for t in (ours["dino"], ours["siglip"])
            )
            llm, ldp_grid = MambaConfig(**ours["llm"]), ours.get("ldp_grid", 14)
            bos, resample = bool(ours.get("bos_before_image", True)), ours.get("resample", "torch")
            tasks = tuple(ours.get("tasks", ()))
        else:
            if m["vision_backbone_id"] not in VISION_BACKBONES:
                raise ConfigError(
                    f"{source}: unknown vision_backbone_id {m['vision_backbone_id']!r}; "
                    f"known: {sorted(VISION_BACKBONES)} (or add a 'cobra_ros' block with shapes)"
                )
            if m["llm_backbone_id"] not in LLM_BACKBONES:
                raise ConfigError(
                    f"{source}: unknown llm_backbone_id {m['llm_backbone_id']!r}; "
                    f"known: {sorted(LLM_BACKBONES)} (or add a 'cobra_ros' block with shapes)"
                )
            (dino, siglip), llm, ldp_grid = (
                VISION_BACKBONES[m["vision_backbone_id"]],
                LLM_BACKBONES[m["llm_backbone_id"]],
                14,
            )
            bos, resample, tasks = False, "pil", ()
        cfg = cls(
            model_id=m["model_id"],
            vision_backbone_id=m["vision_backbone_id"],
            llm_backbone_id=m["llm_backbone_id"],
            arch_specifier=m["arch_specifier"],
            dino=dino,
            siglip=siglip,
            llm=llm,
            image_resize_strategy=m.get("image_resize_strategy", "resize-naive"),
            llm_max_length=m.get("llm_max_length", 2048),
            ldp_grid=ldp_grid,
            bos_before_image=bos,
            resample=resample,
            tasks=tasks,
        )
        cfg.projector_kind  # validates
        if cfg.image_resize_strategy not in RESIZE_STRATEGIES:
            raise ConfigError(
                f"{source}: image_resize_strategy {cfg.image_resize_strategy!r} "
                f"not in {RESIZE_STRATEGIES}"
            )
        if cfg.resample not in RESAMPLERS:
            raise ConfigError(f"{source}: resample {cfg.resample!r} not in {RESAMPLERS}")
        if cfg.resample == "torch" and cfg.image_resize_strategy != "resize-naive":
            raise ConfigError(f"{source}: resample 'torch' supports resize-naive only (use 'pil')")
        return cfg


_TIMM_WIDTHS = {"vit_large_patch14_reg4_dinov2": 1024, "vit_so400m_patch14_siglip_384": 1152}
DINO_TIMM, SIGLIP_TIMM = (
    "vit_large_patch14_reg4_dinov2.lvd142m",
    "vit_so400m_patch14_siglip_384.webli",
)

VISION_BACKBONES = {
    "dinosiglip-vit-so-384px": (
        TowerConfig(DINO_TIMM, 384, IMAGENET_MEAN, IMAGENET_STD),
        TowerConfig(SIGLIP_TIMM, 384, SIGLIP_MEAN, SIGLIP_STD),
    ),
}
LLM_BACKBONES = {
    "mamba-2.8b-zephyr": MambaConfig(d_model=2560, n_layer=64, vocab_size=50277),
}
GPT_NEOX_VOCAB = 50277


def _small_towers(size: int, dino_width: int, siglip_width: int, depth: int, heads: int):
    def tower(name, width, mean, std, extra):
        return TowerConfig(
            name, size, mean, std, dict(embed_dim=width, depth=depth, num_heads=heads, **extra)
        )

    return (
        tower(DINO_TIMM, dino_width, IMAGENET_MEAN, IMAGENET_STD, {}),
        tower(SIGLIP_TIMM, siglip_width, SIGLIP_MEAN, SIGLIP_STD, {}),
    )


def _preset(
    model_id, size, dino_w, siglip_w, depth, heads, d_model, n_layer, vocab, arch="fused-gelu-mlp"
):
    dino, siglip = _small_towers(size, dino_w, siglip_w, depth, heads)
    return CobraConfig(
        model_id=model_id,
        vision_backbone_id=f"dinosiglip-{model_id}-{size}px",
        llm_backbone_id=f"mamba-{model_id}",
        arch_specifier=f"no-align+{arch}",
        dino=dino,
        siglip=siglip,
        llm=MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab),
        bos_before_image=True,
    )


def preset(name: str, vocab_size: int | None = None, arch: str | None = None) -> CobraConfig:
    """Configs by name: `cobra-3b` is the released shape; the rest are small models of the same
    architecture."""
    if name == "cobra-3b":
        dino, siglip = VISION_BACKBONES["dinosiglip-vit-so-384px"]
        cfg = CobraConfig(
            model_id="cobra+3b",
            vision_backbone_id="dinosiglip-vit-so-384px",
            llm_backbone_id="mamba-2.8b-zephyr",
            arch_specifier="no-align+fused-gelu-mlp",
            dino=dino,
            siglip=siglip,
            llm=LLM_BACKBONES["mamba-2.8b-zephyr"],
        )
    elif name in PRESETS:
        cfg = PRESETS[name]
    else:
        raise ConfigError(f"unknown preset {name!r}; known: {preset_names()}")
    if vocab_size is not None:
        cfg = replace(cfg, llm=replace(cfg.llm, vocab_size=vocab_size))
    if arch is not None:
        cfg = replace(cfg, arch_specifier=f"no-align+{arch}")
        cfg.projector_kind
    return cfg


PRESETS = {
    # name: (image px, dino width, siglip width, vit depth, heads, d_model, mamba layers, vocab)
    "micro": _preset("micro", 28, 32, 32, 1, 2, 32, 2, 512),
    "tiny": _preset("tiny", 112, 64, 64, 2, 2, 128, 4, 1024),
    "small": _preset("small", 224, 192, 192, 4, 3, 384, 8, 4096),
    # the bundled Language-Table model: tiny's image size with deeper towers and a wider LM
    "langtable": _preset("langtable", 112, 96, 96, 4, 4, 192, 4, 1024),
}


def preset_names() -> list[str]:
    return ["cobra-3b", *PRESETS]
