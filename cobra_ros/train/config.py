"""What one training run is: the TrainConfig a recipe phase sets, and the checks on it."""
from __future__ import annotations

from dataclasses import dataclass

from cobra_ros.model.config import preset


@dataclass
class TrainConfig:
    preset: str = "langtable"
    scenes: int = 4000
    steps: int = 2500
    scenes_per_step: int = 16
    questions_per_scene: int = 6
    lr: float = 2e-3
    tower_steps: int = 1200  # stage 1: towers learn where each block is
    tower_batch: int = 32
    tower_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0
    vocab_size: int = 1024
    eval_scenes: int = 200
    threads: int = 0  # 0: torch's default
    memory_init: bool = True  # long-memory SSM channels (mamba.long_memory_init)
    first_steps: int = 400  # curriculum: the first steps train only on `first_relations`
    first_relations: str = "presence,count,colour,shape"
    # relations whose examples this run does not train on (comma-separated, e.g. "locate"): the
    # data (and a scene cache) stays as made, and the saved model's tasks do not gain them
    leave_out: str = ""
    # each time a worded yes/no question is drawn, draw its wording family and typing afresh
    reword: bool = False
    # with reword: the share of relation questions whose blocks are called by the dataset's
    # synonyms ("the red block" for the only red one, "the star" for the only star) where they
    # have one
    rename: float = 0.0
    # a model directory to continue from (its towers, projector, LM and tokenizer)
    init_from: str = ""
    # a model directory whose trained vision towers to reuse (set tower_steps to 0)
    towers_from: str = ""
    scene_loss: float = 0.0  # weight of the auxiliary scene-table loss (SceneProbe); 0: off
    scene_layer: int = 2  # the probe reads what this LM layer reads
    # weight of the auxiliary loss on the image tokens (TokenProbe); 0: off
    token_loss: float = 0.0
    # weight of the auxiliary loss at each block a question names (MentionProbe); 0: off
    mention_loss: float = 0.0
    mention_layer: int = 1  # the mention probe reads what this LM layer reads
    # weight of the auxiliary loss on the named blocks' places at the answer (PlacesProbe); 0: off
    places_loss: float = 0.0
    places_layer: int = 3  # the places probe reads what this LM layer reads
    # the first steps train only the probe heads (continuations start them at random)
    probe_steps: int = 0
    where_all: bool = False  # ask "where is ...?" about every visible block of a scene, not one
    weigh_answers: bool = False  # every answer weighs the same in the loss, not every answer token
    # draw some relations' examples more often than others within a scene ("closest=4,extreme=4":
    # a scene's closest question is four times as likely to be among its questions_per_scene as
    # one of its yes/no questions); unnamed relations weigh 1
    weigh_relations: str = ""
    standardise: bool = False  # standardise_projector_input before stage 2
    # a projector kind (config.ARCH_SPECIFIERS) instead of the preset's (or init_from's)
    projector: str = ""
    # fused-ldpnet only: pool the patch grid to ldp_grid x ldp_grid image tokens (0: preset's, or
    # init_from's; with init_from, the same weights pool to the new grid: none depends on it)
    ldp_grid: int = 0
    # with init_from: append this many Mamba layers, starting as no-ops (loop.deepen_llm)
    add_layers: int = 0


def check_config(cfg: TrainConfig) -> None:
    """Reject options that would otherwise be silently ignored."""
    if cfg.ldp_grid and not cfg.init_from and not preset(
        cfg.preset, arch=cfg.projector or None
    ).projector_kind.startswith("fused-ldpnet"):
        raise ValueError(
            "ldp_grid pools only the fused-ldpnet projector: add projector: fused-ldpnet"
        )
    if cfg.rename and not cfg.reword:
        raise ValueError("rename renames only reworded questions: add reword: true")
    if cfg.add_layers and not cfg.init_from:
        raise ValueError("add_layers deepens a model it continues: add init_from (start_from)")
    relation_weights(cfg.weigh_relations)
    if cfg.init_from and cfg.towers_from:
        raise ValueError("init_from already brings its towers: drop towers_from")


def relation_weights(text: str) -> dict[str, float]:
    """Parse weigh_relations ("closest=4,extreme=2") into {relation: weight}; a clear error for
    anything else."""
    weights = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not name.strip() or not weight > 0:
            raise ValueError(
                f"weigh_relations takes relation=weight pairs with weights > 0, not {item!r}"
            )
        weights[name.strip()] = weight
    return weights
