"""Train a small Cobra on Language-Table scenes.

The paper's recipe at small scale: one model, the release architecture (DINOv2 + SigLIP towers,
projector, Mamba LM over [BOS, image, Zephyr prompt]), trained on instruction data with the loss
on answer tokens only. At this size the towers start from random weights: stage 1 (towers.py)
trains them on where the blocks are; stage 2 (loop.py) trains the projector and the LM on the
frozen towers, with auxiliary probes (probes.py) on batches and targets from data.py. Each image
is prefilled once and its Mamba state is shared by several questions about it, as the engine
does at inference. A recipe (recipe.py) chains runs into phases and writes the model with its
recipe, code version and figures.
"""
from cobra_ros.model.mamba import MambaState
from cobra_ros.train.config import TrainConfig, check_config, relation_weights
from cobra_ros.train.data import (BLOCK_INDEX, DESCRIBE_PROMPTS, IGNORE, MOST_NAMED, RENDER_SIZE,
                                  Batches, as_model_inputs, board_xy, length_groups, patch_targets,
                                  probe_targets, scene_table, training_texts, visible_blocks,
                                  with_where_all)
from cobra_ros.train.loop import (deepen_llm, extend_projector, loss_on_answers, lr_at,
                                  make_probes, regrid_projector, train, yes_no_accuracy)
from cobra_ros.train.plots import plot_history
from cobra_ros.train.probes import (MentionProbe, SceneProbe, TokenProbe, split_table,
                                    table_loss, watching)
from cobra_ros.train.towers import (presence_accuracy, pretrain_towers,
                                    standardise_projector_input, tower_features, tower_presence)

__all__ = [
    "BLOCK_INDEX", "DESCRIBE_PROMPTS", "IGNORE", "MOST_NAMED", "RENDER_SIZE", "Batches",
    "MambaState", "MentionProbe", "SceneProbe", "TokenProbe", "TrainConfig", "as_model_inputs",
    "board_xy", "check_config", "deepen_llm", "extend_projector", "length_groups",
    "loss_on_answers", "lr_at", "make_probes", "relation_weights", "patch_targets", "plot_history",
    "presence_accuracy", "pretrain_towers", "probe_targets", "regrid_projector", "scene_table",
    "split_table", "standardise_projector_input", "table_loss", "tower_features", "tower_presence",
    "train", "training_texts", "visible_blocks", "watching", "with_where_all", "yes_no_accuracy",
]
