"""Training data: scenes as model inputs, question/answer token batches and the probes' targets."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from cobra_ros.langtable import questions
from cobra_ros.langtable.world import X_MAX, X_MIN, Y_MAX, Y_MIN
from cobra_ros.model.config import CobraConfig
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT, ChatTokenizer


IGNORE = -100


MOST_NAMED = 3  # blocks one question names ("between")


# a block's column in every target
BLOCK_INDEX = {name: i for i, name in enumerate(questions.ALL_BLOCKS)}


RENDER_SIZE = (320, 180)


DESCRIBE_PROMPTS = (DESCRIBE_PROMPT, questions.DESCRIBE_PROMPT)


def visible_blocks(blocks) -> list:
    """The blocks a supervision target counts: at least half of each one's outline unhidden."""
    return [b for b in blocks if b.visible >= 0.5]


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


def length_groups(lengths, most: int) -> list[list[int]]:
    """The indices of `lengths` in at most `most` groups of neighbouring lengths, cut where padding
    each group to its longest wastes the fewest positions (exact, by dynamic programming over the
    sorted lengths). The LM steps through every padded position of a group, so one 100-token
    question would otherwise make a hundred 25-token ones cost four times as much."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n, most = len(order), max(1, min(most, len(order)))
    # best[k][j]: fewest padded positions of the j shortest in k groups; start[k][j]: where the
    # last of those groups starts
    best = [[0] + [None] * n] + [[None] * (n + 1) for _ in range(most)]
    start = [[0] * (n + 1) for _ in range(most + 1)]
    for k in range(1, most + 1):
        for j in range(k, n + 1):
            best[k][j], start[k][j] = min(
                (best[k - 1][i] + (j - i) * sorted_lengths[j - 1], i)
                for i in range(k - 1, j)
                if best[k - 1][i] is not None
            )
    k = min(range(1, most + 1), key=lambda k: (best[k][n], k))
    groups, j = [], n
    for k in range(k, 0, -1):
        i = start[k][j]
        groups.append(order[i:j])
        j = i
    return groups[::-1]


class Batches:
    """Samples (image indices, question/answer token batches), each question naming its image.

    Short and long answers are padded apart, each kind in up to `groups` groups of similar length
    (`length_groups`)."""

    def __init__(
        self, data: questions.ExampleSet, tokenizer: ChatTokenizer, seed: int, relations=None,
        reword: bool = False, groups: int = 3, rename: float = 0.0, weights=None,
    ):
        """weights: {relation: weight} for drawing a scene's questions (others weigh 1); None
        draws them uniformly."""
        self.tokenizer, self.truths, self.reword = tokenizer, data.truths, reword
        self.weights = weights or None
        self.rename = rename
        self.groups = groups
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
            p = None
            if self.weights:
                p = np.array([self.weights.get(e.relation, 1.0) for e in exs])
                p /= p.sum()
            for k in self.rng.choice(len(exs), min(per_image, len(exs)), replace=False, p=p):
                example = exs[k]
                if self.reword and example.family:
                    on_table = [b.name for b in self.truths[index]]
                    example = questions.reworded(example, self.rng, on_table=on_table,
                                                 rename=self.rename)
                question, answer = training_texts(example, self.rng)
                prompt, target = (
                    self.tokenizer.prompt_ids(question),
                    self.tokenizer.answer_ids(answer),
                )
                rows.append(row)
                asked = asked_index(example) if example.label is not None else None
                seqs.append((prompt, target, *self._named(example, index), asked))
        # Descriptions are several times longer than other answers, and questions vary in length:
        # pad each kind apart, in groups of similar length.
        groups = []
        for is_long in (False, True):
            members = [
                i for i, (p, t, *_) in enumerate(seqs) if (len(t) > self.long_answer) == is_long
            ]
            lengths = [len(seqs[i][0]) + len(seqs[i][1]) for i in members]
            for group in length_groups(lengths, self.groups):
                chosen = [members[i] for i in group]
                padded = self._pad([seqs[i] for i in chosen])
                groups.append((torch.tensor([rows[i] for i in chosen]), *padded))
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
        said = example.names or [questions.block_text(n) for n in example.blocks]
        for slot, (name, text) in enumerate(zip(example.blocks, said)):
            end = self._mention_end(example.question, text)
            if name in placed and end is not None:
                mentions.append((end, board_xy(placed[name])))
            if name in placed and text in example.question:
                places.append((slot, board_xy(placed[name])))
        return mentions, places

    def _mention_end(self, question: str, text: str) -> int | None:
        key = (question, text)
        if len(self._mention_ends) > 200_000:  # reworded questions are mostly new: stay bounded
            self._mention_ends.clear()
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


def asked_index(example: questions.Example) -> int:
    """What a yes/no question asks, as the places probe's class: its index in
    questions.RELATIONS (presence of a block no set has is presence)."""
    relation = example.relation if example.relation in questions.RELATIONS else "presence"
    return questions.RELATIONS.index(relation)


def merge_sets(sets) -> questions.ExampleSet:
    """ExampleSets of one image size as one; each example keeps pointing at its own image."""
    sets = list(sets)
    offsets = np.cumsum([0] + [len(s.images) for s in sets])
    return questions.ExampleSet(
        np.concatenate([s.images for s in sets]),
        [t for s in sets for t in s.truths],
        [replace(e, image=e.image + int(off))
         for s, off in zip(sets, offsets) for e in s.examples],
    )
