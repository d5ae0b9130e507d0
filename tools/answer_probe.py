"""What does the token that answers a yes/no question know? Linear probes on each LM layer.

For held-out scenes it runs every yes/no question through a model and keeps, at the last prompt
token (whose logits give "Yes" or "No"), what each LM layer reads (its normed input) and what the
LM head reads. On half the questions it fits logistic probes, and prints their accuracy on the
other half:
- per relation: that relation's answer (can a readout for this relation alone find it?);
- per pair of relations: which of the two a question asks (does that token still know what is
  asked?).
Next to them, the model's own accuracy. Answers readable per relation while the model stays at
chance mean the comparison is there but not what to compare.

    python tools/answer_probe.py --model models/langtable-tiny
"""
from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from cobra_ros.langtable import questions
from cobra_ros.model.checkpoint import load_model_dir
from cobra_ros.model.mamba import MambaState
from cobra_ros.train import RENDER_SIZE, as_model_inputs, tower_features, watching

PAIRS = (("left_of", "right_of"), ("above", "below"), ("left_of", "above"), ("near", "far_from"))


@torch.no_grad()
def answering_reads(model, tokenizer, data, batch: int = 256):
    """Per yes/no question: what each LM layer and the LM head read at its answering token (n_layer
    + 1 vectors), its relation, its label and the model's own answer."""
    features = tower_features(model, as_model_inputs(data.images, model.cfg))
    _, state = model.llm(
        model.prefix_embeds(model.projector(features), tokenizer.bos_id), last_only=True
    )
    head_reads = []
    hook = model.llm.backbone.norm_f.register_forward_hook(
        lambda m, a, out: head_reads.append(out)
    )
    out = []
    try:
        examples = [e for e in data.examples if e.label is not None]
        for start in range(0, len(examples), batch):
            chunk = examples[start:start + batch]
            prompts = [tokenizer.prompt_ids(e.question) for e in chunk]
            ids = torch.full((len(chunk), max(map(len, prompts))), tokenizer.eos_id)
            # padded on the right: a causal model's earlier tokens are unaffected
            for i, p in enumerate(prompts):
                ids[i, :len(p)] = torch.tensor(p)
            rows = torch.tensor([e.image for e in chunk])
            with contextlib.ExitStack() as stack:
                seen = [
                    stack.enter_context(watching(model.llm, k))
                    for k in range(model.cfg.llm.n_layer)
                ]
                logits, _ = model.llm(
                    model.llm.embed(ids), MambaState(state.conv[:, rows], state.ssm[:, rows])
                )
            for i, e in enumerate(chunk):
                t = len(prompts[i]) - 1
                reads = [s[-1][i, t].float() for s in seen] + [head_reads[-1][i, t].float()]
                said = bool(logits[i, t, tokenizer.yes_id] > logits[i, t, tokenizer.no_id])
                out.append((reads, e.relation, e.label, said))
    finally:
        hook.remove()
    return out


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> float:
    """A logistic probe fitted on the first half (standardised on it), scored on the second."""
    half = len(y) // 2
    x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-4)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = (
            F.binary_cross_entropy_with_logits(x[:half] @ w + b, y[:half])
            + 1e-3 * w.square().sum()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(((x[half:] @ w + b > 0).float() == y[half:]).float().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/langtable-tiny")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    model, tokenizer = load_model_dir(args.model)
    model.eval()
    data = questions.make_examples(
        args.seed, args.scenes, image_size=None, render_size=RENDER_SIZE
    )
    reads = answering_reads(model, tokenizer, data)
    n = model.cfg.llm.n_layer
    print(
        f"{'probe':22s} {'n':>5s} {'model':>6s}  "
        + " ".join(f"layer{k}" for k in range(n))
        + "  head"
    )
    rng = np.random.default_rng(0)
    rows = [
        (
            rel,
            [
                (r, float(label), float(said == label))
                for r, rel_, label, said in reads
                if rel_ == rel
            ],
        )
        for rel in sorted({rel for _, rel, _, _ in reads})
    ]
    for a, b in PAIRS:
        both = [(r, float(rel == a), np.nan) for r, rel, _, _ in reads if rel in (a, b)]
        rows.append((f"asks {a} | {b}", [both[i] for i in rng.permutation(len(both))]))
    for name, items in rows:
        y = torch.tensor([t for _, t, _ in items])
        accs = [probe_accuracy(torch.stack([r[k] for r, _, _ in items]), y) for k in range(n + 1)]
        own = np.mean([m for _, _, m in items])
        print(f"{name:22s} {len(items):5d} {'' if np.isnan(own) else f'{own:.3f}':>6s}  " +
              " ".join(f"{a:6.3f}" for a in accs))


if __name__ == "__main__":
    main()
