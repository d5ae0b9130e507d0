"""Train a small Cobra on synthetic Language-Table scenes.

The paper's recipe at small scale: one model, the release architecture (DINOv2 + SigLIP towers,
fused GELU-MLP projector, Mamba LM over [BOS, image, Zephyr prompt]), trained on instruction data
with the loss on answer tokens only. At this size the towers start from random weights, so they are
trained jointly with the projector and the LM (the paper freezes pretrained towers). Each image is
prefilled once and its Mamba state is shared by several questions about it, as the engine does at
inference.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.langtable.world import X_MAX, X_MIN, Y_MAX, Y_MIN
from cobra_ros.model.checkpoint import load_model_dir, save_model_dir
from cobra_ros.model.cobra import Cobra, random_cobra
from cobra_ros.model.config import CobraConfig, preset
from cobra_ros.model.mamba import MambaState, long_memory_init
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT, ChatTokenizer, build_tokenizer

IGNORE = -100
MOST_NAMED = 3  # blocks one question names ("between")
# a block's column in every target
BLOCK_INDEX = {name: i for i, name in enumerate(questions.ALL_BLOCKS)}
RENDER_SIZE = (320, 180)
DESCRIBE_PROMPTS = (DESCRIBE_PROMPT, questions.DESCRIBE_PROMPT)


def visible_blocks(blocks) -> list:
    """The blocks a supervision target counts: at least half of each one's outline unhidden."""
    return [b for b in blocks if b.visible >= 0.5]


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
    standardise: bool = False  # standardise_projector_input before stage 2
    # a projector kind (config.ARCH_SPECIFIERS) instead of the preset's (or init_from's)
    projector: str = ""
    # fused-ldpnet only: pool the patch grid to ldp_grid x ldp_grid image tokens (0: preset's)
    ldp_grid: int = 0


def check_config(cfg: TrainConfig) -> None:
    """Reject options that would otherwise be silently ignored."""
    if cfg.init_from and cfg.ldp_grid:
        raise ValueError("--init-from keeps the saved model's token grid: drop --ldp-grid")
    if cfg.ldp_grid and not preset(
        cfg.preset, arch=cfg.projector or None
    ).projector_kind.startswith("fused-ldpnet"):
        raise ValueError(
            "--ldp-grid pools only the fused-ldpnet projector: add --projector fused-ldpnet"
        )
    if cfg.init_from and cfg.towers_from:
        raise ValueError("--init-from already brings its towers: drop --towers-from")


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


def as_model_inputs(images: np.ndarray, cfg: CobraConfig) -> np.ndarray:
    """Resize once, with the model's own preprocessing: training sees what inference sees."""
    from cobra_ros.model.vision import Preprocess

    resize = Preprocess(cfg)._resize
    out = []
    for chunk in np.array_split(images, max(1, len(images) // 256)):
        x = resize(torch.from_numpy(chunk).permute(0, 3, 1, 2).float() / 255.0)
        out.append((x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def with_where_all(data: questions.ExampleSet) -> None:
    """Replace each scene's one "where" question by one about every visible block (in place): a
    block's place is what every spatial answer reads, and one question per scene teaches it
    slowly."""
    kept = [e for e in data.examples if e.relation != "where"]
    asked = [replace(e, image=i) for i, blocks in enumerate(data.truths)
             for e in questions.where_questions(visible_blocks(blocks))]
    data.examples = kept + asked


def training_texts(example: questions.Example, rng: np.random.Generator) -> tuple[str, str]:
    question = example.question
    if example.relation == "describe":  # answer the paper's prompt and the dataset-style one alike
        question = DESCRIBE_PROMPTS[rng.integers(len(DESCRIBE_PROMPTS))]
    return question, example.answer


class Batches:
    """Samples (image indices, question/answer token batches), each question naming its image."""

    def __init__(
        self, data: questions.ExampleSet, tokenizer: ChatTokenizer, seed: int, relations=None
    ):
        self.tokenizer, self.truths = tokenizer, data.truths
        self._mention_ends = {}
        self.by_image: list[list[questions.Example]] = [[] for _ in range(len(data.images))]
        for example in data.examples:
            if relations is None or example.relation in relations:
                self.by_image[example.image].append(example)
        self.usable = [i for i, exs in enumerate(self.by_image) if exs]
        self.rng = np.random.default_rng(seed)
        self.long_answer = 8  # tokens

    def sample(self, n_images: int, per_image: int):
        picked = self.rng.choice(self.usable, n_images, replace=False)
        rows, seqs = [], []
        for row, index in enumerate(picked):
            exs = self.by_image[index]
            for k in self.rng.choice(len(exs), min(per_image, len(exs)), replace=False):
                question, answer = training_texts(exs[k], self.rng)
                prompt, target = (
                    self.tokenizer.prompt_ids(question),
                    self.tokenizer.answer_ids(answer),
                )
                rows.append(row)
                asked = (
                    questions.RELATIONS.index(exs[k].relation)
                    if exs[k].label is not None
                    else None
                )
                seqs.append((prompt, target, *self._named(exs[k], index), asked))
        # Descriptions are several times longer than other answers: pad each kind only to its own
        # length.
        groups = []
        for is_long in (False, True):
            members = [
                i for i, (p, t, *_) in enumerate(seqs) if (len(t) > self.long_answer) == is_long
            ]
            if members:
                groups.append(
                    (
                        torch.tensor([rows[i] for i in members]),
                        *self._pad([seqs[i] for i in members]),
                    )
                )
        return torch.from_numpy(picked), groups

    def _named(self, example: questions.Example, image: int) -> tuple[list, list]:
        """Where the blocks a question names are, as probe targets; none for descriptions and
        counts, which name every block. Mentions: (prompt position of the last token of a visible
        block's name, its board position). Places: (slot, board position) of each visible block
        named, the slot being its order in the question ("Which block is closest to X?" names only
        X)."""
        if example.relation in ("describe", "count"):
            return [], []
        placed = {b.name: b for b in visible_blocks(self.truths[image])}
        mentions, places = [], []
        for slot, name in enumerate(example.blocks):
            end = self._mention_end(example.question, questions.block_text(name))
            if name in placed and end is not None:
                mentions.append((end, board_xy(placed[name])))
            if name in placed and questions.block_text(name) in example.question:
                places.append((slot, board_xy(placed[name])))
        return mentions, places

    def _mention_end(self, question: str, text: str) -> int | None:
        key = (question, text)
        if key not in self._mention_ends:
            at = question.find(text)
            whole, head = (
                self.tokenizer.plain(question),
                self.tokenizer.plain(question[: at + len(text)]),
            )
            # the name must end on a token boundary of the whole question's tokens
            ok = at >= 0 and whole[:len(head)] == head
            self._mention_ends[key] = len(self.tokenizer.user_ids) + len(head) - 1 if ok else None
        return self._mention_ends[key]

    def _pad(self, seqs):
        """Token ids and labels (n, T); the mentions and the places as probe targets: (sequence,
        position, slot) indices (3, M) and board positions (M, 2); what each yes/no question asks:
        (sequence, position) indices (2, Q) and its index in questions.RELATIONS (Q,). A mention
        sits at the end of a block's name (slot 0); the places and what is asked sit at the last
        prompt token, whose logits give the answer."""
        length = max(len(p) + len(t) for p, t, *_ in seqs)
        ids = torch.full((len(seqs), length), self.tokenizer.eos_id, dtype=torch.long)
        labels = torch.full((len(seqs), length), IGNORE, dtype=torch.long)
        mentions, places, asks = [], [], []
        for i, (prompt, target, named, slots, asked) in enumerate(seqs):
            seq = prompt + target
            ids[i, :len(seq)] = torch.tensor(seq)
            # logits at position p predict token p+1: label the positions just before each answer
            # token
            labels[i, len(prompt) - 1:len(seq) - 1] = torch.tensor(target)
            mentions += [((i, end, 0), xy) for end, xy in named]
            places += [((i, len(prompt) - 1, slot), xy) for slot, xy in slots]
            asks += [] if asked is None else [(i, len(prompt) - 1, asked)]
        asks = torch.tensor(asks, dtype=torch.long).view(-1, 3).T
        return ids, labels, probe_targets(mentions), probe_targets(places), (asks[:2], asks[2])


def probe_targets(entries) -> tuple[torch.Tensor, torch.Tensor]:
    """[((sequence, position, slot), xy), ...] as indices (3, M) and board positions (M, 2)."""
    at = torch.tensor([a for a, _ in entries], dtype=torch.long).view(-1, 3).T
    return at, torch.tensor([xy for _, xy in entries], dtype=torch.float32).view(-1, 2)


def board_xy(block) -> list[float]:
    """A block's place on the board, scaled to [0, 1]: what every position probe predicts."""
    return [(block.x - X_MIN) / (X_MAX - X_MIN), (block.y - Y_MIN) / (Y_MAX - Y_MIN)]


def scene_table(truths: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Per scene: which of ALL_BLOCKS are visible (N, K), where on the board in [0, 1] (N, K, 2)"""
    present = torch.zeros(len(truths), len(BLOCK_INDEX))
    where = torch.zeros(len(truths), len(BLOCK_INDEX), 2)
    for i, blocks in enumerate(truths):
        for b in visible_blocks(blocks):
            present[i, BLOCK_INDEX[b.name]] = 1.0
            where[i, BLOCK_INDEX[b.name]] = torch.tensor(board_xy(b))
    return present, where


@contextlib.contextmanager
def watching(llm, layer: int):
    """Collects what LM layer `layer` reads (its normed residual stream) in every forward."""
    seen = []
    handle = llm.backbone.layers[layer].norm.register_forward_hook(
        lambda m, args, out: seen.append(out)
    )
    try:
        yield seen
    finally:
        handle.remove()


class SceneProbe(nn.Module):
    """Auxiliary loss, thrown away after training: at the last image token, a linear head on what
    LM layer `layer` reads (its RMSNormed residual stream) predicts the whole scene: every block's
    presence and board position.

    Answer-only supervision reaches the image only through a question-to-image-token match that a
    randomly initialised Mamba finds late. This dense target asks the early layers to keep a
    summary of the scene in their state, which later layers then only select from. On contexts of
    distinct tokens it works (test_train.py; yes/no on a 32-token context: 0.996 after 350 steps,
    chance without it). What decides it on images is the number of image tokens: behind the 64
    patch tokens of the langtable preset the probe's loss stayed at its constant-guess level (0.63)
    for 300+ steps, even on perfect per-patch block labels; with the LDPv2 projector pooling them
    to 2x2 tokens (`projector` fused-ldpnet, `ldp_grid` 2) it falls to ~0.2 within 900 steps on the
    towers' features.
    """

    def __init__(self, d_model: int, layer: int, n_blocks: int = len(questions.ALL_BLOCKS)):
        super().__init__()
        self.head = nn.Linear(d_model, 3 * n_blocks)
        self.layer, self.n_blocks = layer, n_blocks

    def watching(self, llm):
        return watching(llm, self.layer)

    def loss(
        self, residual: torch.Tensor, present: torch.Tensor, where: torch.Tensor
    ) -> torch.Tensor:
        return table_loss(self.head(residual.float()), present, where)


class TokenProbe(nn.Module):
    """Auxiliary loss, thrown away after training: a linear head on all image tokens together (the
    projector's output) predicts every block's presence and board position.

    The LM can only answer "where" or "left of" if the image tokens say where each block is, and
    trained through the LM alone they hardly do: this head fitted on the frozen tokens of a model
    trained without it placed blocks with 0.124 mean error (board-normalised) and ordered two
    blocks left/right 82% of the time, where a projector trained for it reaches 0.047 and 96%
    (tools/position_probe.py, with and without --own; docs/training.md).
    """

    def __init__(self, n_tokens: int, d_model: int, n_blocks: int = len(questions.ALL_BLOCKS)):
        super().__init__()
        self.head = nn.Linear(n_tokens * d_model, 3 * n_blocks)

    def loss(
        self, tokens: torch.Tensor, present: torch.Tensor, where: torch.Tensor
    ) -> torch.Tensor:
        return table_loss(self.head(tokens.flatten(1).float()), present, where)


class MentionProbe(nn.Module):
    """Auxiliary loss, thrown away after training: at the last token of each block a question names
    ("Is the red moon left of ..."), a linear head on what LM layer `layer` reads predicts that
    block's board position.

    Every spatial answer needs the places of the blocks it names, looked up in the image's Mamba
    state by the name's tokens. The answer alone is a weak signal for that lookup: one yes/no bit
    at the end of the question, after two lookups and a comparison. Without this loss, a head on
    layer 1 stayed at its constant-guess error (0.35); trained on layer 2 it fell to 0.10, and
    "where" answers went from 0.48 to 0.76 (docs/training.md).

    With `slots` > 1 it is the places probe: at the last prompt token, whose logits answer, it
    predicts the places of all the blocks the question names, in the order named (slot k: the
    k-th block), and which relation a yes/no question asks about them. A relation compares two
    places; this asks the layers below `layer` to bring both to the answer, so that only the
    comparison is left for the layers above. Without it, the relation asked had faded by layer 3
    (tools/answer_probe.py: decodable at 0.94 from layer 1's input, 0.60 from layer 3's, while
    each relation's answer was readable there at 0.89-0.94), and "left of" and "right of"
    questions together stayed at chance. With it, all eight relations are learnt together
    (held-out 0.81-0.98 on the bundled model).
    """

    def __init__(self, d_model: int, layer: int, slots: int = 1, kinds: int = 0):
        super().__init__()
        self.head = nn.Linear(d_model, 2 * slots + kinds)
        self.layer, self.slots = layer, slots

    def errors(self, residual: torch.Tensor, targets) -> torch.Tensor:
        """Each target's L1 position error (M,). residual: (n, T, d) for a group of questions;
        targets: that group's (indices (3, M): sequence, position, slot; positions (M, 2))."""
        (seq, pos, slot), where = targets
        guess = torch.sigmoid(self.head(residual[seq, pos].float())[:, : 2 * self.slots]).view(
            -1, self.slots, 2
        )
        return F.l1_loss(guess[torch.arange(len(slot)), slot], where, reduction="none").sum(-1)

    def kind_errors(self, residual: torch.Tensor, asks) -> torch.Tensor:
        """Cross-entropy (Q,) of the kind each question asks; asks: (indices (2, Q), kinds (Q,))"""
        (seq, pos), kind = asks
        return F.cross_entropy(
            self.head(residual[seq, pos].float())[:, 2 * self.slots :], kind, reduction="none"
        )


def split_table(out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A probe's output (N, 3K): presence logits (N, K), board positions in [0, 1] (N, K, 2)."""
    return out[:, :k], torch.sigmoid(out[:, k:]).view(-1, k, 2)


def table_loss(out: torch.Tensor, present: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """A probe's loss against scene_table: presence cross-entropy + L1 error of present blocks."""
    logits, xy = split_table(out, present.shape[1])
    place = (F.l1_loss(xy, where, reduction="none").sum(-1) * present).sum() / present.sum().clamp(
        min=1
    )
    return F.binary_cross_entropy_with_logits(logits, present) + place


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
def tower_features(model: Cobra, images: np.ndarray) -> torch.Tensor:
    """The frozen towers run once per training image; stage 2 only trains what comes after them."""
    return torch.cat(
        [
            model.vision(torch.from_numpy(chunk))
            for chunk in np.array_split(images, max(1, len(images) // 64))
        ]
    )


@torch.no_grad()
def yes_no_accuracy(engine, data: questions.ExampleSet, images: np.ndarray) -> float:
    frames = engine.encode_batch(list(images))
    yes_no = [e for e in data.examples if e.label is not None]
    probs = engine.yes_no_batch([frames[e.image] for e in yes_no], [e.question for e in yes_no])
    return float(np.mean([(p >= 0.5) == e.label for p, e in zip(probs, yes_no)]))


def patch_targets(
    truths: list, grid: int, image_size: int, render_size=RENDER_SIZE
) -> tuple[torch.Tensor, ...]:
    """Per patch: which blocks have their centre in it (multi-hot) and where (in [0, 1])."""
    present = torch.zeros(len(truths), grid * grid, len(BLOCK_INDEX))
    offset = torch.zeros(len(truths), grid * grid, 2)
    scale = np.array([image_size / render_size[0], image_size / render_size[1]])
    patch = image_size / grid
    for i, blocks in enumerate(truths):
        for b in visible_blocks(blocks):
            u, v = (np.array([b.u, b.v]) + 0.5) * scale / patch
            col, row = min(int(u), grid - 1), min(int(v), grid - 1)
            present[i, row * grid + col, BLOCK_INDEX[b.name]] = 1.0
            offset[i, row * grid + col] = torch.tensor([u - col, v - row], dtype=torch.float32)
    return present, offset


def pretrain_towers(model: Cobra, images: np.ndarray, truths: list, cfg: TrainConfig, log=print):
    """Stage 1, standing in for the pretrained DINOv2/SigLIP the paper starts from: dense
    supervision of the penultimate-block patch features Cobra reads (which blocks sit in each
    patch, and where), through a throwaway linear head per tower."""
    grid = model.cfg.dino.image_size // 14
    present, offset = patch_targets(truths, grid, model.cfg.dino.image_size)
    towers = [model.vision.dino, model.vision.siglip]
    heads = nn.ModuleDict({name: nn.Linear(t.embed_dim, len(questions.ALL_BLOCKS) + 2)
                           for name, t in zip(("dino", "siglip"), towers)})
    params = [p for t in towers for p in t.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.tower_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed + 1)
    bar = tqdm(range(cfg.tower_steps), desc="towers", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.tower_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.tower_steps))
        idx = rng.choice(len(images), cfg.tower_batch, replace=False)
        pixels = model.vision.preprocess(torch.from_numpy(images[idx]))
        loss = 0.0
        for name, features in model.vision.per_tower(pixels).items():
            out = heads[name](features)
            has = present[idx].amax(-1, keepdim=True)
            loss = (
                loss
                + F.binary_cross_entropy_with_logits(out[..., :-2], present[idx]) * 10
                + (
                    F.l1_loss(torch.sigmoid(out[..., -2:]), offset[idx], reduction="none") * has
                ).sum()
                / has.sum()
            )
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


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out_dir: str | Path, cfg: TrainConfig, log=print) -> dict:
    from cobra_ros.model.engine import CobraEngine

    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # decayed SSM states underflow; denormal arithmetic is very slow on x86
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    log(f"rendering {cfg.scenes} training and {cfg.eval_scenes} held-out scenes ...")
    data = questions.make_examples(cfg.seed, cfg.scenes, image_size=None, render_size=RENDER_SIZE)
    held_out = questions.make_examples(
        cfg.seed + 10_000, cfg.eval_scenes, image_size=None, render_size=RENDER_SIZE
    )
    if cfg.where_all:
        with_where_all(data)
    if cfg.init_from:
        model, tokenizer = load_model_dir(cfg.init_from)
        if cfg.projector and cfg.projector != model.cfg.projector_kind:
            model = extend_projector(model, cfg.projector)
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
    batches = Batches(data, tokenizer, cfg.seed)
    # Questions about one block's presence or identity first: the simplest image lookups, which the
    # relation questions then build on.
    first_batches = (
        Batches(data, tokenizer, cfg.seed, set(cfg.first_relations.split(",")))
        if cfg.first_steps
        else None
    )
    probe_layer = min(cfg.scene_layer, model_cfg.llm.n_layer - 1)
    probe = SceneProbe(model_cfg.llm.d_model, probe_layer) if cfg.scene_loss else None
    token_probe = (
        TokenProbe(model.projector(features[:1]).shape[1], model_cfg.llm.d_model)
        if cfg.token_loss
        else None
    )
    mention_probe = (
        MentionProbe(model_cfg.llm.d_model, min(cfg.mention_layer, model_cfg.llm.n_layer - 1))
        if cfg.mention_loss
        else None
    )
    places_probe = (
        MentionProbe(
            model_cfg.llm.d_model,
            min(cfg.places_layer, model_cfg.llm.n_layer - 1),
            slots=MOST_NAMED,
            kinds=len(questions.RELATIONS),
        )
        if cfg.places_loss
        else None
    )
    table = scene_table(data.truths) if probe or token_probe else None
    probes = {
        "probe": probe,
        "token_probe": token_probe,
        "mention_probe": mention_probe,
        "places_probe": places_probe,
    }
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


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    loss = np.array(history["loss"])
    window = max(1, len(loss) // 50)
    ax.plot(history["step"], loss, alpha=0.25, color="tab:blue", label="loss (per step)")
    ax.plot(
        history["step"][window - 1 :],
        np.convolve(loss, np.ones(window) / window, "valid"),
        color="tab:blue",
        label=f"loss ({window}-step mean)",
    )
    for key, colour, label in (
        ("scene_loss", "tab:orange", "scene-probe"),
        ("token_loss", "tab:red", "token-probe"),
        ("mention_loss", "tab:purple", "mention-probe"),
        ("places_loss", "tab:brown", "places-probe"),
    ):
        aux = np.array(history.get(key, []))
        if aux.size and aux.any():
            ax.plot(
                history["step"][window - 1 :],
                np.convolve(aux, np.ones(window) / window, "valid"),
                color=colour,
                label=f"{label} loss ({window}-step mean)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy / probe losses")
    ax.set_yscale("log")
    if history["eval_step"]:
        acc = ax.twinx()
        acc.plot(
            history["eval_step"],
            history["eval_yes_no"],
            "o-",
            color="tab:green",
            label="held-out yes/no acc",
        )
        acc.set_ylim(0.4, 1.0)
        acc.set_ylabel("held-out yes/no accuracy")
        acc.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("cobra-train: small Cobra on synthetic Language-Table scenes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
