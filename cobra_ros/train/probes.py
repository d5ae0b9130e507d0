"""Auxiliary probes: linear heads, thrown away after training, whose losses teach the image
tokens and the LM layers where the blocks are and what a question asks."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from cobra_ros.langtable import questions


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
