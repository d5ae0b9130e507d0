"""Residual add + RMSNorm as the release runs it: mamba_ssm's fused add-norm with residual_in_fp32.

The kernel reads the block output and the residual as float32, adds them, keeps the sum as the next
residual (float32 with residual_in_fp32) and normalises that float32 sum, rounding only the normed
output to the activation dtype. The unfused branch of the release's Block (which it does not take)
rounds the sum to bf16 first; in bf16 runs that moves every layer's input (see
test/test_release_numerics.py). On CUDA with mamba_ssm importable the fused kernel itself runs
here.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def _fused_rms_norm():
    try:  # the module was renamed between mamba_ssm releases
        from mamba_ssm.ops.triton.layer_norm import rms_norm_fn
    except ImportError:
        try:
            from mamba_ssm.ops.triton.layernorm import rms_norm_fn
        except ImportError:
            return None
    return rms_norm_fn


def fused_available(x: torch.Tensor) -> bool:
    return x.is_cuda and _fused_rms_norm() is not None


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of `x` computed in float32; the output in the weight's dtype."""
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(weight.dtype)


def add_rms_norm(
    h: torch.Tensor,
    residual: torch.Tensor | None,
    norm: torch.nn.Module,
    residual_in_fp32: bool = True,
    prenorm: bool = True,
):
    """norm(h + residual), and with `prenorm` the sum as the next residual.

    `norm`: an RMSNorm module (`weight`, `eps`). The sum and the norm are float32 whatever the
    dtypes; the next residual is float32 with `residual_in_fp32`, else the residual's own dtype
    (h's for the first layer), as the kernel stores it. The fused kernel serves inference on CUDA;
    with autograd on, and on CPU, the module itself is called, so forward hooks on it (train.py's
    probes) see what the layer reads.
    """
    if fused_available(h) and not torch.is_grad_enabled():
        return _fused_rms_norm()(
            h,
            norm.weight,
            None,
            residual=residual,
            eps=norm.eps,
            prenorm=prenorm,
            residual_in_fp32=residual_in_fp32,
        )
    total = h.float() if residual is None else h.float() + residual.float()
    normed = norm(total).to(h.dtype)
    if not prenorm:
        return normed
    keep = torch.float32 if residual_in_fp32 else (h if residual is None else residual).dtype
    return normed, total.to(keep)
