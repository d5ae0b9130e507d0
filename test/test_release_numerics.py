"""The language model against an independent reference, and the release's bf16 add + RMSNorm.

The reference is Hugging Face transformers' MambaForCausalLM (its pure PyTorch path on CPU), loaded
with our LM's weights. Run with `-s` to see the figures.
"""

from __future__ import annotations

import pytest
import torch

from cobra_ros.model import mamba
from cobra_ros.model.addnorm import add_rms_norm, fused_available
from cobra_ros.model.config import MambaConfig
from cobra_ros.model.mamba import MambaLM, RMSNorm, init_weights

CFG = MambaConfig(d_model=64, n_layer=4, vocab_size=500)
PROMPT, STEPS = 48, 16  # prefill tokens, then tokens decoded one at a time


def small_lm(seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    lm = MambaLM(CFG)
    gen = torch.Generator().manual_seed(seed)
    init_weights(lm, gen)
    with torch.no_grad():  # norm weights of ones would hide a norm that ignores them
        for p in [layer.norm.weight for layer in lm.backbone.layers] + [lm.backbone.norm_f.weight]:
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
    return lm.eval()


def hf_reference(lm: MambaLM):
    from transformers import MambaConfig as HFConfig
    from transformers import MambaForCausalLM

    cfg = lm.cfg
    hf_cfg = HFConfig(
        vocab_size=cfg.padded_vocab_size,
        hidden_size=cfg.d_model,
        state_size=cfg.d_state,
        num_hidden_layers=cfg.n_layer,
        conv_kernel=cfg.d_conv,
        expand=cfg.expand,
        time_step_rank=cfg.dt_rank,
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=cfg.norm_epsilon,
        residual_in_fp32=cfg.residual_in_fp32,
        tie_word_embeddings=True,
    )
    hf = MambaForCausalLM(hf_cfg)
    # The two name the same modules alike except the embedding ("embeddings" in transformers).
    state = {
        k.replace("backbone.embedding.", "backbone.embeddings."): v
        for k, v in lm.state_dict().items()
    }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    assert torch.equal(hf.lm_head.weight, lm.lm_head.weight)
    return hf.eval()


def ids(seed: int = 1, n: int = PROMPT + STEPS) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (2, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def ours_prefill_then_steps(lm: MambaLM, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at every position: the first PROMPT by prefill, the rest one `step` at a time."""
    logits, state = lm(lm.embed(tokens[:, :PROMPT]))
    out = [logits.float()]
    for t in range(PROMPT, tokens.shape[1]):
        out.append(lm.step(tokens[:, t], state).float()[:, None])
    return torch.cat(out, 1)


@torch.no_grad()
def hf_prefill_then_steps(hf, tokens: torch.Tensor) -> torch.Tensor:
    first = hf(tokens[:, :PROMPT], use_cache=True)
    out, cache = [first.logits.float()], first.cache_params
    for t in range(PROMPT, tokens.shape[1]):
        step = hf(tokens[:, t : t + 1], cache_params=cache, use_cache=True)
        out.append(step.logits.float())
        cache = step.cache_params
    return torch.cat(out, 1)


@pytest.fixture(scope="module")
def models():
    lm = small_lm()
    return lm, hf_reference(lm)


def test_prefill_matches_transformers_in_fp32(models):
    lm, hf = models
    tokens = ids()
    with torch.no_grad():
        ours = lm(lm.embed(tokens))[0]
        ref = hf(tokens).logits
    delta = (ours - ref).abs().max().item()
    print(
        f"\nfp32 prefill, {tokens.shape[1]} tokens: max |logit delta| vs MambaForCausalLM = "
        f"{delta:.3e} "
        f"(logits std {ref.std().item():.3f})"
    )
    assert delta < 1e-4


def test_step_by_step_matches_transformers_in_fp32(models):
    lm, hf = models
    tokens = ids(2)
    ours, ref = ours_prefill_then_steps(lm, tokens), hf_prefill_then_steps(hf, tokens)
    delta = (ours - ref).abs().max().item()
    step_delta = (ours[:, PROMPT:] - ref[:, PROMPT:]).abs().max().item()
    print(
        f"\nfp32 prefill {PROMPT} + {STEPS} steps: max |logit delta| {delta:.3e} "
        f"(decoded steps alone {step_delta:.3e})"
    )
    assert delta < 1e-4


def _bf16_drift(lm: MambaLM, tokens: torch.Tensor, ref: torch.Tensor) -> float:
    half = MambaLM(lm.cfg)
    half.load_state_dict(lm.state_dict())
    half = half.to(torch.bfloat16).eval()
    return (ours_prefill_then_steps(half, tokens) - ref).abs().max().item()


def unfused_add_norm(h, residual, norm, residual_in_fp32=True, prenorm=True):
    """The release's unfused branch (and ours before): the sum is rounded to the weight dtype."""
    total = h if residual is None else h + residual
    normed = norm(total.to(norm.weight.dtype))
    if not prenorm:
        return normed
    return normed, total.float() if residual_in_fp32 else total


def rms_norm(weight: torch.Tensor) -> RMSNorm:
    norm = RMSNorm(weight.shape[0], 1e-5).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


def test_bf16_drift_against_fp32(models, monkeypatch):
    """bf16 logits against the fp32 reference, with the fused-kernel add-norm and with the unfused
    branch. In a small random LM the matmuls' bf16 rounding dominates either way, so the two drift
    alike (within ~20% either way over seeds); what the fused form buys is agreeing with the
    release's kernel (test_add_norm_is_computed_on_the_float32_sum)."""
    lm, hf = models
    tokens = ids(3)
    ref = hf_prefill_then_steps(hf, tokens)
    fused = _bf16_drift(lm, tokens, ref)
    monkeypatch.setattr(mamba, "add_rms_norm", unfused_add_norm)
    unfused = _bf16_drift(lm, tokens, ref)
    print(
        f"\nbf16 drift, max |logit delta| vs fp32 over {tokens.shape[1]} positions (logits std "
        f"{ref.std().item():.3f}): fused add-norm {fused:.4f}, unfused (before) {unfused:.4f}"
    )
    assert fused < 0.1 * ref.std().item()
    assert fused <= 1.25 * unfused


def test_add_norm_is_computed_on_the_float32_sum():
    """The normed output is the float32 norm of the float32 sum, rounded once to bf16 (within one
    rounding of float64), and the residual is kept in float32 unrounded, as the fused kernel
    does; the unfused branch, which rounds the sum first, is not within one rounding."""
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(64, 256, generator=gen) * 3).to(torch.bfloat16)
    residual = torch.randn(64, 256, generator=gen) * 40  # float32, as deep in the residual stream
    norm = rms_norm((1 + 0.5 * torch.randn(256, generator=gen)).to(torch.bfloat16))
    with torch.no_grad():
        normed, new_residual = add_rms_norm(h, residual, norm, residual_in_fp32=True)
        unfused = unfused_add_norm(h, residual, norm)[0]
    total = h.double() + residual.double()
    oracle = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    assert new_residual.dtype == torch.float32 and torch.equal(new_residual, h.float() + residual)
    assert normed.dtype == torch.bfloat16
    ulp = (oracle.abs() * 2.0**-8).clamp(min=1e-30)  # bf16 has 8 significant bits
    assert ((normed.double() - oracle).abs() <= ulp).all()
    assert ((unfused.double() - oracle).abs() > ulp).any()


def test_first_layer_and_final_norm_dtypes():
    h = torch.randn(3, 32).to(torch.bfloat16)
    norm = rms_norm(torch.ones(32, dtype=torch.bfloat16))
    with torch.no_grad():
        normed, residual = add_rms_norm(h, None, norm, residual_in_fp32=True)
        _, kept = add_rms_norm(h, None, norm, residual_in_fp32=False)
        final = add_rms_norm(h, residual, norm, prenorm=False)
    assert residual.dtype == torch.float32 and torch.equal(residual, h.float())
    assert kept.dtype == torch.bfloat16
    assert final.dtype == torch.bfloat16 and final.shape == h.shape


def test_forward_hooks_on_the_norm_see_what_the_layer_reads():
    """train.py's probes hook the norm modules: the reference path calls them."""
    lm = small_lm()
    seen = []
    lm.backbone.layers[1].norm.register_forward_hook(lambda m, args, out: seen.append(out))
    inputs = []
    lm.backbone.layers[1].mixer.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    with torch.no_grad():
        lm(lm.embed(ids()[:, :8]))
    assert len(seen) == 1 and torch.equal(seen[0], inputs[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_kernel_matches_reference_on_cuda():
    if not fused_available(torch.zeros(1, device="cuda")):
        pytest.skip("mamba_ssm's fused rms_norm is not importable")
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(8, 100, 2560, generator=gen).to(torch.bfloat16)
    residual = torch.randn(8, 100, 2560, generator=gen) * 20
    norm = rms_norm((1 + 0.1 * torch.randn(2560, generator=gen)).to(torch.bfloat16))
    with torch.no_grad():
        ref_out, ref_res = add_rms_norm(h, residual, norm)
        gpu = rms_norm(norm.weight.cuda())
        out, res = add_rms_norm(h.cuda(), residual.cuda(), gpu)
        final = add_rms_norm(h.cuda(), residual.cuda(), gpu, prenorm=False)
    assert res.dtype == torch.float32 and torch.allclose(res.cpu(), ref_res)
    assert out.dtype == final.dtype == torch.bfloat16
    scale = ref_out.float().abs().max().item()
    assert (out.cpu().float() - ref_out.float()).abs().max().item() <= 2**-7 * scale
    assert torch.equal(out, final)
