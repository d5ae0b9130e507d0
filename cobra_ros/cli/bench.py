"""cobra-bench: the engine against its baselines (bandwidth limit, mamba_ssm, a transformer VLM
decoder, its own slower paths), all measured in one run; prints ratios, writes JSON and a PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cobra_ros.bench import BenchConfig, plot, ratios, run
from cobra_ros.model.config import preset_names


def _skip(section: dict) -> str | None:
    if "error" in section:
        return f"failed: {section['error']}"
    if "skipped" in section:
        return f"skipped: {section['skipped'].removeprefix('skipped: ')}"
    return None


def report(results: dict) -> str:
    cfg, ours = results["config"], results["ours"]
    lines = [
        f"cobra-bench on {results['device']}: preset {cfg['preset']}, "
        f"{cfg['new_tokens']} new tokens, "
        f"dtype {cfg['dtype'] or 'default'}"
    ]

    def section(title, key, fmt):
        data = results.get(key, {})
        lines.append(f"{title}: {_skip(data) or fmt(data)}")

    section(
        "ours",
        "ours",
        lambda o: (
            f"Eval_avg {o['eval_avg_tokens_per_s']:.1f} tok/s (image -> {cfg['new_tokens']} "
            f"tokens, {o['prefix_tokens']}-token prefix); decode {o['decode_tokens_per_s']:.1f} "
            f"tok/s; frame -> first token {o['frame_to_first_token_ms']:.1f} ms; yes/no on a kept "
            f"frame p50 {o['yes_no_p50_ms']:.2f} ms, p99 {o['yes_no_p99_ms']:.2f} ms; "
            f"{o['batch']} cameras batched {o['batch_tokens_per_s']:.1f} tok/s"
        ),
    )
    section(
        "weight-streaming limit",
        "streaming",
        lambda s: (
            f"copy {s['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write) / "
            f"{s['weight_bytes_per_token'] / 1e9:.3f} GB of LM weights per token = "
            f"{s['limit_tokens_per_s']:.1f} tok/s; batch-1 decode "
            f"{s['decode_tokens_per_s']:.1f} tok/s = {s['fraction_of_limit']:.2f} of it"
        ),
    )
    section(
        "mamba_ssm generate(cg=True)",
        "mamba_ssm",
        lambda m: (
            f"{m['tokens_per_s']:.1f} tok/s at {m['prefix_tokens']}-token prefix; Eval_avg / it = "
            f"{ours['eval_avg_tokens_per_s'] / m['tokens_per_s']:.2f}x"
        ),
    )
    section(
        "Phi transformer",
        "transformer",
        lambda t: (
            f"{t['tokens_per_s']:.1f} tok/s ({t['image_prefix_tokens']}-token image prefix + "
            f"{cfg['new_tokens']} tokens, shape {t['shape']}); Eval_avg / it = "
            f"{ours['eval_avg_tokens_per_s'] / t['tokens_per_s']:.2f}x; its prefill + first token "
            f"{t['prefill_plus_first_ms']:.1f} ms"
        ),
    )
    section(
        "questions on one frame, batched vs looped",
        "questions",
        lambda q: "; ".join(
            f"{k}: {v['looped_ms']:.1f} -> {v['batched_ms']:.1f} ms ({v['speedup']:.2f}x)"
            for k, v in q.items()
        ),
    )
    section(
        "prefill scan, one layer",
        "scan",
        lambda s: (
            f"{s['tokens']} tokens: chunked {s['chunked_ms']:.1f} ms, loop {s['loop_ms']:.1f} ms "
            f"(chunked / loop {s['chunked_ms'] / s['loop_ms']:.2f}); rule picks {s['picked']}, "
            f"{'the faster' if s['picked_is_faster'] else 'NOT the faster'}"
        ),
    )
    section(
        "batch-1 decode, CUDA graph vs eager",
        "graph",
        lambda g: (
            f"graph {g['graph_tokens_per_s']:.1f} tok/s, eager "
            f"{g['eager_tokens_per_s']:.1f} tok/s ({g['speedup']:.2f}x)"
            + (f"; CAPTURE FAILED: {g['capture_failed']}" if "capture_failed" in g else "")
        ),
    )
    section(
        "GPU greedy tokens == CPU",
        "gpu_vs_cpu",
        lambda g: (
            f"{g['tokens']} tokens "
            + ("equal" if g["equal"] else f"DIFFER from token {g['first_mismatch']}")
        ),
    )
    section(
        "bf16 vs fp32 next-token logits",
        "bf16_vs_fp32",
        lambda b: (
            f"max |diff| {b['max_abs_diff']:.4f} = {b['relative']:.4f} of max |logit| "
            f"{b['max_abs_logit']:.2f} "
            f"(tolerance {b['tolerance']}: {'within' if b['within_tolerance'] else 'OUTSIDE'}); "
            f"top-1 {'equal' if b['top1_equal'] else 'differs'}"
        ),
    )
    mem, kv = ours.get("state_bytes", {}), results.get("transformer", {}).get("cache_bytes", {})
    what = "peak allocated" if "CPU" not in results["device"] else "kept per sequence"
    for L in sorted(mem, key=int):
        theirs = (
            f", transformer {kv[L] / 2**20:.2f} MiB ({kv[L] / mem[L]:.1f}x)" if L in kv else ""
        )
        lines.append(
            f"memory at {L} prompt tokens ({what}): cobra {mem[L] / 2**20:.2f} MiB{theirs}"
        )
    lines.append("ratios: " + "; ".join(f"{k} {v:.2f}" for k, v in ratios(results).items()))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small", choices=preset_names(), help="model shape")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--dtype",
        default=None,
        help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per answer")
    parser.add_argument("--batch", type=int, default=8, help="cameras decoded together")
    parser.add_argument("--yes-no-repeats", type=int, default=50, help="timed yes/no calls")
    parser.add_argument(
        "--prompt-lengths",
        default="750,1500,3000",
        help="comma-separated prompt lengths for the memory measurement",
    )
    parser.add_argument(
        "--questions",
        default="1,4,16",
        help="comma-separated numbers of questions on one frame, batched vs looped",
    )
    parser.add_argument(
        "--scan-tokens",
        type=int,
        default=750,
        help="tokens of the chunked-scan vs step-loop prefill measurement",
    )
    parser.add_argument(
        "--json", default="bench.json", help="results; the plot is written beside it (.png)"
    )
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        preset=args.preset,
        device=args.device,
        dtype=args.dtype,
        new_tokens=args.new_tokens,
        batch=args.batch,
        yes_no_repeats=args.yes_no_repeats,
        prompt_lengths=tuple(int(x) for x in args.prompt_lengths.split(",")),
        question_counts=tuple(int(x) for x in args.questions.split(",")),
        scan_tokens=args.scan_tokens,
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(results):
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    results = run(cfg, after_stage=save)
    plot(results, out.with_suffix(".png"))
    print(report(results))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
