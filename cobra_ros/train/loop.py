"""Stage 2: the projector and LM trained on answers (plus the probes' losses), its learning-rate
schedule and curriculum, and the run that writes a model directory."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.langtable.questions import NONEXISTENT
from cobra_ros.model.checkpoint import load_model_dir, save_model_dir
from cobra_ros.model.cobra import Cobra, random_cobra
from cobra_ros.model.config import preset
from cobra_ros.model.mamba import MambaState, init_weights, long_memory_init
from cobra_ros.model.tokenizer import ChatTokenizer, build_tokenizer
from cobra_ros.train.config import TrainConfig, check_config, relation_weights
from cobra_ros.train.data import (DESCRIBE_PROMPTS, IGNORE, MOST_NAMED, RENDER_SIZE, Batches,
                                  as_model_inputs, scene_table, with_where_all)
from cobra_ros.train.plots import plot_history
from cobra_ros.train.probes import MentionProbe, SceneProbe, TokenProbe, watching
from cobra_ros.train.towers import (pretrain_towers, standardise_projector_input,
                                    tower_features, tower_presence)


def task_of(relation: str) -> str:
    """The task an example of `relation` teaches: every relation and presence is a yes/no."""
    return "yes_no" if relation in questions.RELATIONS or relation == NONEXISTENT else relation


def extend_projector(model: Cobra, kind: str) -> Cobra:
    """The same model with a projector of `kind` that holds all of the saved projector's weights
    (e.g. fused-ldpnet -> fused-ldpnet-pos); its new parameters start at their init."""
    extended = Cobra(
        replace(model.cfg, arch_specifier=f"no-align+{kind}"),
        model.vision.dino,
        model.vision.siglip,
    )
    extended.llm.load_state_dict(model.llm.state_dict())
    new = set(extended.projector.state_dict()) - set(model.projector.state_dict())
    missing, unexpected = extended.projector.load_state_dict(
        model.projector.state_dict(), strict=False
    )
    if unexpected or set(missing) != new:
        raise ValueError(f"a {kind} projector cannot continue a {model.cfg.projector_kind} one")
    return extended


def regrid_projector(model: Cobra, grid: int) -> Cobra:
    """The same model pooling its patches to grid x grid image tokens. A fused-ldpnet projector's
    weights (per-patch MLP, position embedding, depthwise conv over the token grid) do not depend
    on the grid, so every weight carries over; the LM then reads grid**2 tokens per image."""
    if not model.cfg.projector_kind.startswith("fused-ldpnet"):
        raise ValueError(f"ldp_grid pools only a fused-ldpnet projector, not "
                         f"{model.cfg.projector_kind}")
    regridded = Cobra(replace(model.cfg, ldp_grid=grid), model.vision.dino, model.vision.siglip)
    regridded.llm.load_state_dict(model.llm.state_dict())
    regridded.projector.load_state_dict(model.projector.state_dict())
    return regridded


@torch.no_grad()
def deepen_llm(model: Cobra, extra: int, seed: int) -> Cobra:
    """The same model with `extra` Mamba layers appended after its last one. They start as Mamba
    (and long memory) initialises them, except that their output projections are zero: each
    adds nothing to the residual stream, so the deeper model first answers exactly as `model`
    does, and the earlier layers (which the probes read by index) keep their places."""
    cfg = replace(model.cfg, llm=replace(model.cfg.llm, n_layer=model.cfg.llm.n_layer + extra))
    deeper = Cobra(cfg, model.vision.dino, model.vision.siglip)
    generator = torch.Generator().manual_seed(seed)
    init_weights(deeper.llm, generator)
    long_memory_init(deeper.llm, generator)
    new = set(deeper.llm.state_dict()) - set(model.llm.state_dict())
    missing, unexpected = deeper.llm.load_state_dict(model.llm.state_dict(), strict=False)
    if unexpected or set(missing) != new:
        raise ValueError("deepen_llm: the saved LM does not fit the first layers")
    n = model.cfg.llm.n_layer
    for layer in deeper.llm.backbone.layers[n:]:
        layer.mixer.out_proj.weight.zero_()
    deeper.projector.load_state_dict(model.projector.state_dict())
    return deeper


def make_probes(cfg: TrainConfig, model: Cobra, features: torch.Tensor) -> dict:
    """The auxiliary heads `cfg` turns on (None where its loss weight is 0), freshly started, by
    name: the scene probe, the token probe, the mention probe and the places probe. `features`:
    some images' tower features (the token probe is sized to the projector's tokens)."""
    d, layers = model.cfg.llm.d_model, model.cfg.llm.n_layer
    return {
        "probe": SceneProbe(d, min(cfg.scene_layer, layers - 1)) if cfg.scene_loss else None,
        "token_probe": (
            TokenProbe(model.projector(features[:1]).shape[1], d) if cfg.token_loss else None
        ),
        "mention_probe": (
            MentionProbe(d, min(cfg.mention_layer, layers - 1)) if cfg.mention_loss else None
        ),
        "places_probe": (
            MentionProbe(d, min(cfg.places_layer, layers - 1), slots=MOST_NAMED,
                         kinds=len(questions.RELATIONS))
            if cfg.places_loss
            else None
        ),
    }


def loss_on_answers(model: Cobra, features, groups, bos_id: int, probe: SceneProbe | None = None,
                    table=None, token_probe: TokenProbe | None = None, weigh_answers: bool = False,
                    mention_probe: MentionProbe | None = None,
                    places_probe: MentionProbe | None = None) -> tuple[torch.Tensor, ...]:
    """Mean cross-entropy over answer tokens, then the losses of the SceneProbe, the TokenProbe,
    the MentionProbe and the places probe (its mean place error plus its mean cross-entropy of what
    is asked; 0 without them); each image is prefilled once and shared by its questions.

    `features`: the frozen towers' patch features of the sampled images; `table`: their
    scene_table. `weigh_answers`: the mean over answers of each answer's mean token cross-entropy
    instead. Per token, one description (~50 tokens) outweighs twenty yes/no answers (2 tokens, one
    of them the end token).
    """
    tokens = model.projector(features)
    prefix = model.prefix_embeds(tokens, bos_id)
    with probe.watching(model.llm) if probe else contextlib.nullcontext() as seen:
        _, state = model.llm(prefix, last_only=True)
    scene = probe.loss(seen[-1][:, -1], *table) if probe else torch.zeros(())
    placed = token_probe.loss(tokens, *table) if token_probe else torch.zeros(())
    total, count = 0.0, 0
    mention_errors, place_errors, asked = [], [], []
    for rows, ids, labels, mentions, places, asks in groups:
        with contextlib.ExitStack() as stack:
            seen = {
                p: stack.enter_context(watching(model.llm, p.layer))
                for p in (mention_probe, places_probe)
                if p
            }
            logits, _ = model.llm(
                model.llm.embed(ids), MambaState(state.conv[:, rows], state.ssm[:, rows])
            )
        if mention_probe:
            mention_errors.append(mention_probe.errors(seen[mention_probe][-1], mentions))
        if places_probe:
            place_errors.append(places_probe.errors(seen[places_probe][-1], places))
            asked.append(places_probe.kind_errors(seen[places_probe][-1], asks))
        per_token = F.cross_entropy(
            logits.transpose(1, 2).float(), labels, ignore_index=IGNORE, reduction="none"
        )
        if weigh_answers:
            total = total + (per_token.sum(1) / (labels != IGNORE).sum(1)).sum()
            count += len(rows)
        else:
            total = total + per_token.sum()
            count += int((labels != IGNORE).sum())

    def mean(found):
        found = torch.cat(found) if found else torch.zeros(0)
        return found.mean() if len(found) else torch.zeros(())

    return total / count, scene, placed, mean(mention_errors), mean(place_errors) + mean(asked)


@torch.no_grad()
def yes_no_accuracy(engine, data: questions.ExampleSet, images: np.ndarray) -> float:
    frames = engine.encode_batch(list(images))
    yes_no = [e for e in data.examples if e.label is not None]
    probs = engine.yes_no_batch([frames[e.image] for e in yes_no], [e.question for e in yes_no])
    return float(np.mean([(p >= 0.5) == e.label for p, e in zip(probs, yes_no)]))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out_dir: str | Path, cfg: TrainConfig, log=print, data=None, held_out=None) -> dict:
    """One run: `cfg`'s towers (stage 1) and projector + LM (stage 2), saved in `out_dir` with
    training.json and loss.png. `data` / `held_out`: ExampleSets to train and score on instead
    of rendering cfg.scenes / cfg.eval_scenes scenes of seed cfg.seed (a recipe's data mix)."""
    from cobra_ros.model.engine import CobraEngine

    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # decayed SSM states underflow; denormal arithmetic is very slow on x86
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if data is None:
        log(f"rendering {cfg.scenes} training and {cfg.eval_scenes} held-out scenes ...")
        data = questions.make_examples(cfg.seed, cfg.scenes, image_size=None,
                                       render_size=RENDER_SIZE)
    if held_out is None:
        held_out = questions.make_examples(
            cfg.seed + 10_000, cfg.eval_scenes, image_size=None, render_size=RENDER_SIZE
        )
    data = copy.copy(data)  # with_where_all and leave_out replace its examples: the caller's stay
    if cfg.where_all:
        with_where_all(data)
    if cfg.leave_out:
        left_out = set(cfg.leave_out.split(","))
        data.examples = [e for e in data.examples if e.relation not in left_out]
    weights = relation_weights(cfg.weigh_relations)
    unknown = set(weights) - {e.relation for e in data.examples}
    if unknown:
        raise ValueError(
            f"weigh_relations names relations no training example has: {sorted(unknown)}"
        )
    if cfg.init_from:
        model, tokenizer = load_model_dir(cfg.init_from)
        if cfg.projector and cfg.projector != model.cfg.projector_kind:
            model = extend_projector(model, cfg.projector)
        if cfg.ldp_grid and cfg.ldp_grid != model.cfg.ldp_grid:
            model = regrid_projector(model, cfg.ldp_grid)
        if cfg.add_layers:
            model = deepen_llm(model, cfg.add_layers, cfg.seed)
        model_cfg = model.cfg
    else:
        corpus = [t for e in data.examples for t in (e.question, e.answer)] + list(
            DESCRIBE_PROMPTS
        )
        tokenizer = ChatTokenizer.load(
            build_tokenizer(corpus, cfg.vocab_size, out_dir / "tokenizer")
        )
        model_cfg = preset(cfg.preset, vocab_size=len(tokenizer), arch=cfg.projector or None)
        if cfg.ldp_grid:
            model_cfg = replace(model_cfg, ldp_grid=cfg.ldp_grid)
        model = random_cobra(model_cfg, cfg.seed)
        if cfg.memory_init:
            long_memory_init(model.llm, torch.Generator().manual_seed(cfg.seed + 2))
        if cfg.towers_from:
            model.vision.load_state_dict(load_model_dir(cfg.towers_from)[0].vision.state_dict())
    model.train()
    images = as_model_inputs(data.images, model_cfg)
    held_images = as_model_inputs(held_out.images, model_cfg)
    log(f"data ready in {time.perf_counter() - t0:.0f}s: {len(data.examples)} examples, "
        f"vocab {len(tokenizer)}")

    tower_seen = {}
    if cfg.tower_steps:
        heads = pretrain_towers(model, images, data.truths, cfg, log)
        model.vision.eval()
        tower_seen = tower_presence(model, heads, held_images, held_out.truths)
        log(
            "towers: held-out block presence (balanced) "
            + ", ".join(f"{k} {v:.3f}" for k, v in tower_seen.items())
        )
    model.vision.requires_grad_(False).eval()  # stage 2: the paper's recipe, vision frozen
    features = tower_features(model, images)
    if cfg.standardise and not cfg.init_from:
        standardise_projector_input(model, features)
    batches = Batches(data, tokenizer, cfg.seed, reword=cfg.reword, rename=cfg.rename,
                      weights=weights)
    # Questions about one block's presence or identity first: the simplest image lookups, which the
    # relation questions then build on.
    first_batches = (
        Batches(data, tokenizer, cfg.seed, set(cfg.first_relations.split(",")), cfg.reword,
                rename=cfg.rename)
        if cfg.first_steps
        else None
    )
    probes = make_probes(cfg, model, features)
    probe, token_probe, mention_probe, places_probe = probes.values()
    table = scene_table(data.truths) if probe or token_probe else None
    named_by_kind = {
        False: [(n, p) for n, p in model.named_parameters() if p.requires_grad],
        True: [(f"{k}.{n}", p) for k, m in probes.items() if m for n, p in m.named_parameters()],
    }
    trainable = [p for named in named_by_kind.values() for _, p in named]
    param_groups = [
        {
            "params": [p for n, p in named if (p.ndim >= 2 and "A_log" not in n) == decays],
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "probe": is_probe,
        }
        for is_probe, named in named_by_kind.items()
        for decays in (True, False)
    ]
    opt = torch.optim.AdamW([g for g in param_groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.95))
    history = {
        "step": [],
        "loss": [],
        "scene_loss": [],
        "token_loss": [],
        "mention_loss": [],
        "places_loss": [],
        "eval_step": [],
        "eval_yes_no": [],
    }
    bar = tqdm(range(cfg.steps), desc="train", unit="step")
    smooth = None
    for step in bar:
        # during probe_steps only the (freshly started) probe heads learn
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg) if group["probe"] or step >= cfg.probe_steps else 0.0
        picked, groups = (first_batches if step < cfg.first_steps else batches).sample(
            cfg.scenes_per_step, cfg.questions_per_scene
        )
        table_rows = (table[0][picked], table[1][picked]) if table is not None else None
        answer_loss, scene_loss, token_loss, mention_loss, places_loss = loss_on_answers(
            model,
            features[picked],
            groups,
            tokenizer.bos_id,
            probe,
            table_rows,
            token_probe,
            cfg.weigh_answers,
            mention_probe,
            places_probe,
        )
        loss = answer_loss + cfg.scene_loss * scene_loss + cfg.token_loss * token_loss + \
            cfg.mention_loss * mention_loss + cfg.places_loss * places_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        smooth = (
            answer_loss.item() if smooth is None else 0.98 * smooth + 0.02 * answer_loss.item()
        )
        history["step"].append(step)
        history["loss"].append(answer_loss.item())
        history["scene_loss"].append(scene_loss.item())
        history["token_loss"].append(token_loss.item())
        history["mention_loss"].append(mention_loss.item())
        history["places_loss"].append(places_loss.item())
        bar.set_postfix(
            loss=f"{smooth:.3f}",
            scene=f"{scene_loss.item():.3f}",
            tokens=f"{token_loss.item():.3f}",
            mentions=f"{mention_loss.item():.3f}",
            places=f"{places_loss.item():.3f}",
        )
        if (step + 1) % max(1, cfg.steps // 10) == 0 or step + 1 == cfg.steps:
            accuracy = yes_no_accuracy(CobraEngine(model.eval(), tokenizer), held_out, held_images)
            model.projector.train()
            model.llm.train()
            history["eval_step"].append(step + 1)
            history["eval_yes_no"].append(accuracy)
            log(f"step {step + 1}: loss {smooth:.3f}, held-out yes/no accuracy {accuracy:.3f}")
    model.eval()
    model.cfg = replace(model.cfg, tasks=tuple(sorted(
        set(model.cfg.tasks) | {task_of(e.relation) for e in data.examples})))
    save_model_dir(model, tokenizer, out_dir)
    summary = {
        "train_config": vars(cfg),
        "seconds": time.perf_counter() - t0,
        "final_loss": smooth,
        "held_out_yes_no": history["eval_yes_no"][-1] if history["eval_yes_no"] else None,
        "held_out_tower_presence": tower_seen,
    }
    (out_dir / "training.json").write_text(
        json.dumps({**summary, "history": history}, indent=1) + "\n"
    )
    if history["step"]:
        plot_history(history, out_dir / "loss.png")
    return summary
