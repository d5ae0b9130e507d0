"""cobra-bench: the engine against a transformer VLM decoder (and mamba_ssm on CUDA), in one run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cobra_ros.bench import BenchConfig, plot_memory, run
from cobra_ros.model.config import preset_names


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(results: dict) -> str:
    ours, tf, ref = results["ours"], results["transformer"], results["mamba_ssm"]
    cfg = results["config"]
    lines = [f"cobra-bench on {results['device']}: preset {cfg['preset']}, {cfg['new_tokens']} new tokens, "
             f"dtype {cfg['dtype'] or 'default'}",
             f"{'metric':<34}{'cobra':>12}{'transformer':>14}{'ratio':>9}"]

    def row(name, mine, theirs="", r=""):
        lines.append(f"{name:<34}{mine:>12}{theirs:>14}{r:>9}")

    row("Eval_avg (tokens/s, frame->last)", f"{ours['eval_avg_tokens_per_s']:.1f}")
    row("decode (tokens/s)", f"{ours['decode_tokens_per_s']:.1f}", f"{tf['decode_tokens_per_s']:.1f}",
        ratio(ours["decode_tokens_per_s"], tf["decode_tokens_per_s"]))
    row("frame -> first token (ms)", f"{ours['frame_to_first_token_ms']:.1f}",
        f"{tf['prefill_plus_first_ms']:.1f}*", ratio(tf["prefill_plus_first_ms"], ours["frame_to_first_token_ms"]))
    row("yes/no on cached frame p50 (ms)", f"{ours['yes_no_p50_ms']:.2f}")
    row("yes/no on cached frame p99 (ms)", f"{ours['yes_no_p99_ms']:.2f}")
    batch_key = next(k for k in ours if k.startswith("batch"))
    row(f"{batch_key.split('_')[0]} aggregate (tokens/s)", f"{ours[batch_key]:.1f}")
    for L in sorted(ours["state_bytes"], key=int):
        mine, theirs = ours["state_bytes"][L], tf["cache_bytes"][L]
        row(f"memory at {L} prompt tokens (MiB)", f"{mine / 2**20:.2f}", f"{theirs / 2**20:.2f}", ratio(theirs, mine))
    if ref:
        row("mamba_ssm generate(cg=True) (tok/s)", "", f"{ref['tokens_per_s']:.1f}",
            ratio(ours["eval_avg_tokens_per_s"], ref["tokens_per_s"]))
    lines.append(f"* transformer: prefill of a {tf['image_prefix_tokens']}-token image prefix + first token, "
                 f"shape {tf['shape']}; ratios >1 favour cobra")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small", choices=preset_names())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--yes-no-repeats", type=int, default=50)
    parser.add_argument("--prompt-lengths", default="750,1500,3000")
    parser.add_argument("--json", default="bench.json", help="results; the memory plot is written beside it")
    args = parser.parse_args(argv)
    cfg = BenchConfig(preset=args.preset, device=args.device, dtype=args.dtype, new_tokens=args.new_tokens,
                      batch=args.batch, yes_no_repeats=args.yes_no_repeats,
                      prompt_lengths=tuple(int(x) for x in args.prompt_lengths.split(",")))
    results = run(cfg)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot_memory(results, out.with_suffix(".png"))
    print(report(results))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
