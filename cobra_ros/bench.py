"""Benchmarks of the engine against baselines measured in the same run.

Random weights at a preset's shape (speed does not depend on weight values). Baselines:
  * transformer: a Hugging Face Phi decoder (Phi-2's shape at cobra-3b, the preset's LM width and depth
    otherwise) with an image prefix of 576 tokens (LLaVA-Phi's; the preset's patch count when smaller),
    decoding with its KV cache, as LLaVA-Phi / TinyLLaVA / MobileVLM v2 do;
  * mamba_ssm: `MambaLMHeadModel.generate(cg=True)` at the same LM shape, when mamba_ssm and CUDA are there.
Absolute times mean something only on the GPU; on CPU compare the ratios.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cobra_ros.model.cobra import random_cobra
from cobra_ros.model.config import GPT_NEOX_VOCAB, preset
from cobra_ros.model.engine import CobraEngine, resolve_dtype
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT, ChatTokenizer, build_tokenizer

PHI2 = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32)
LLAVA_IMAGE_TOKENS = 576


@dataclass
class BenchConfig:
    preset: str = "small"
    device: str = "cpu"
    dtype: str | None = None
    new_tokens: int = 256
    yes_no_repeats: int = 50
    batch: int = 8
    prompt_lengths: tuple = (750, 1500, 3000)
    seed: int = 0


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, (time.perf_counter() - t0) * 1000


def build_engine(cfg: BenchConfig, tmp) -> CobraEngine:
    vocab = GPT_NEOX_VOCAB if cfg.preset == "cobra-3b" else preset(cfg.preset).llm.vocab_size
    tokenizer = ChatTokenizer.load(build_tokenizer([DESCRIBE_PROMPT], vocab, tmp, pad_to_exact=True))
    model = random_cobra(preset(cfg.preset, vocab_size=len(tokenizer)), cfg.seed)
    model = model.to(device=cfg.device, dtype=resolve_dtype(cfg.dtype, cfg.device))
    return CobraEngine(model, tokenizer, name=f"cobra[{cfg.preset}]")


def bench_engine(engine: CobraEngine, cfg: BenchConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    s = engine.model.cfg.dino.image_size
    image = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    engine.describe(image, max_new_tokens=4, stop_at_eos=False)  # warm-up
    answer, total_ms = _timed(lambda: engine.describe(image, max_new_tokens=cfg.new_tokens, stop_at_eos=False),
                              cfg.device)
    first, first_ms = _timed(lambda: engine.describe(image, max_new_tokens=1, stop_at_eos=False), cfg.device)
    frame = engine.encode(image)
    yes_no = []
    for _ in range(cfg.yes_no_repeats):
        yes_no.append(_timed(lambda: engine.yes_no(frame, "Is the red moon left of the blue cube?"), cfg.device)[1])
    frames = engine.encode_batch([rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(cfg.batch)])
    batch, batch_ms = _timed(lambda: engine.ask_batch(frames, [DESCRIBE_PROMPT] * cfg.batch, cfg.new_tokens,
                                                      stop_at_eos=False), cfg.device)
    return {
        "eval_avg_tokens_per_s": 1000 * answer.num_tokens / total_ms,
        "frame_to_first_token_ms": first_ms,
        "decode_tokens_per_s": answer.tokens_per_second,
        "yes_no_p50_ms": float(np.percentile(yes_no, 50)),
        "yes_no_p99_ms": float(np.percentile(yes_no, 99)),
        f"batch{cfg.batch}_tokens_per_s": 1000 * sum(a.num_tokens for a in batch) / batch_ms,
        "state_bytes": {L: _state_bytes(engine, frame, L) for L in cfg.prompt_lengths},
    }


@torch.inference_mode()
def _state_bytes(engine: CobraEngine, frame, prompt_tokens: int) -> int:
    """What the engine keeps after a prompt of this many tokens: the recurrent state (and, on CUDA, the peak)."""
    ids = torch.zeros(1, prompt_tokens, dtype=torch.long, device=engine.device)
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        engine.model.llm(engine.model.llm.embed(ids), frame.state, last_only=True)
        return torch.cuda.max_memory_allocated()
    _, state = engine.model.llm(engine.model.llm.embed(ids), frame.state, last_only=True)
    return state.nbytes


def transformer_baseline(engine: CobraEngine, cfg: BenchConfig) -> dict:
    from transformers import PhiConfig, PhiForCausalLM

    llm = engine.model.cfg.llm
    shape = PHI2 if cfg.preset == "cobra-3b" else dict(hidden_size=llm.d_model, intermediate_size=4 * llm.d_model,
                                                      num_hidden_layers=2 * llm.n_layer,
                                                      num_attention_heads=max(1, llm.d_model // 64))
    prefix = LLAVA_IMAGE_TOKENS if cfg.preset == "cobra-3b" else engine.model.cfg.num_patches
    config = PhiConfig(vocab_size=51200 if cfg.preset == "cobra-3b" else llm.vocab_size,
                       max_position_embeddings=max(cfg.prompt_lengths) + prefix + cfg.new_tokens + 64, **shape)
    torch.manual_seed(cfg.seed)
    model = PhiForCausalLM(config).to(device=cfg.device, dtype=engine.model.dtype).eval()
    embeds = torch.randn(1, prefix + 16, config.hidden_size, device=cfg.device, dtype=engine.model.dtype)

    def generate(n):
        with torch.inference_mode():
            return model.generate(inputs_embeds=embeds, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0)

    generate(4)
    out, total_ms = _timed(lambda: generate(cfg.new_tokens), cfg.device)
    _, first_ms = _timed(lambda: generate(1), cfg.device)
    return {"decode_tokens_per_s": 1000 * cfg.new_tokens / total_ms, "prefill_plus_first_ms": first_ms,
            "image_prefix_tokens": prefix, "shape": shape,
            "cache_bytes": {L: _kv_bytes(model, L, cfg.device) for L in cfg.prompt_lengths}}


@torch.inference_mode()
def _kv_bytes(model, prompt_tokens: int, device) -> int:
    ids = torch.zeros(1, prompt_tokens, dtype=torch.long, device=device)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        model(ids, use_cache=True)
        return torch.cuda.max_memory_allocated()
    cache = model(ids, use_cache=True).past_key_values
    return sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))


def mamba_ssm_baseline(engine: CobraEngine, cfg: BenchConfig) -> dict | None:
    if torch.device(cfg.device).type != "cuda":
        return None
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as RefConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError:
        return None
    llm = engine.model.cfg.llm
    ref = MambaLMHeadModel(RefConfig(d_model=llm.d_model, n_layer=llm.n_layer, vocab_size=llm.vocab_size,
                                     ssm_cfg={"layer": "Mamba1"}, rms_norm=True, residual_in_fp32=True,
                                     fused_add_norm=True), device=cfg.device, dtype=engine.model.dtype).eval()
    ids = torch.zeros(1, engine.model.cfg.num_patches + 21, dtype=torch.long, device=cfg.device)
    length = ids.shape[1] + cfg.new_tokens
    ref.generate(ids, max_length=length, cg=True)
    _, total_ms = _timed(lambda: ref.generate(ids, max_length=length, cg=True), cfg.device)
    return {"tokens_per_s": 1000 * cfg.new_tokens / total_ms}


def run(cfg: BenchConfig) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(cfg, tmp)
    ours = bench_engine(engine, cfg)
    return {"config": vars(cfg), "device": _device_name(cfg.device), "ours": ours,
            "transformer": transformer_baseline(engine, cfg), "mamba_ssm": mamba_ssm_baseline(engine, cfg)}


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def plot_memory(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, theirs = results["ours"]["state_bytes"], results["transformer"]["cache_bytes"]
    lengths = sorted(ours)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lengths, [ours[L] / 2 ** 20 for L in lengths], "o-", label="Cobra (Mamba state)")
    ax.plot(lengths, [theirs[L] / 2 ** 20 for L in lengths], "s-", label="transformer (KV cache)")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("MiB " + ("(peak allocated)" if "CPU" not in results["device"] else "(kept per sequence)"))
    ax.set_title(f"memory vs prompt length, {results['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
