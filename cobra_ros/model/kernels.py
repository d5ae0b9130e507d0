"""Optional CUDA kernels from `mamba_ssm` (and `causal_conv1d`) for the prefill scan and decoding.

The fused residual add + RMSNorm is the blocks' own `_add_norm` (the release's fp32 add and norm,
fused on CUDA), which the decode step calls like the prefill.

Used only when the tensors are on CUDA and `mamba_ssm` imports; the plain PyTorch reference in
`mamba.py` is the specification they are tested against (test/test_gpu.py, skipped without CUDA).
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def _ops():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except ImportError:
        return None
    return selective_scan_fn, selective_state_update


@functools.lru_cache(maxsize=1)
def _conv_update():
    try:
        from causal_conv1d import causal_conv1d_update
    except ImportError:
        return None
    return causal_conv1d_update


def available(x: torch.Tensor) -> bool:
    return x.is_cuda and _ops() is not None


def has_conv_update() -> bool:
    """causal_conv1d is optional: without it the conv step stays in PyTorch (a small part)."""
    return _conv_update() is not None


def scan(x, dt, dt_proj, A, B, C, D, z, mask=None, h0=None):
    """Selective scan with the gate fused. x, z: (b, L, d); dt: (b, L, r); B, C: (b, L, n).

    `mask` (b, L), 1 on real tokens, zeroes delta on right padding so each row's state stops at
    its own length. The kernel always starts from a zero state; a given state h0 (b, d, n) is
    added by linearity (`mamba.from_state`). With either, delta and its softplus are computed here
    rather than in the kernel."""
    from cobra_ros.model.mamba import from_state

    selective_scan_fn = _ops()[0]
    delta = dt @ dt_proj.weight.t()
    bias, softplus = dt_proj.bias.float(), True
    if mask is not None or h0 is not None:
        delta = torch.nn.functional.softplus(delta.float() + bias)
        if mask is not None:
            delta = delta * mask[..., None]
        delta, bias, softplus = delta.to(x.dtype), None, False  # the kernel's dtype rule
    y, last = selective_scan_fn(
        x.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A,
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D.float(),
        z.transpose(1, 2).contiguous(),
        delta_bias=bias,
        delta_softplus=softplus,
        return_last_state=True,
    )
    y, last = y.transpose(1, 2), last.float()
    if h0 is not None:
        y_add, h_add = from_state(h0, delta, A, C)
        y = y + (y_add * torch.nn.functional.silu(z.float())).to(y.dtype)
        last = last + h_add
    return y, last


def step(x, z, mixer, ssm_state):
    """One decoding step after the conv (x: its output); updates ssm_state in place.

    Returns the gated output."""
    selective_state_update = _ops()[1]
    dt, B, C = mixer._ssm_inputs(x)
    dt = dt @ mixer.dt_proj.weight.t()
    A = -torch.exp(mixer.A_log.float())
    return selective_state_update(
        ssm_state,
        x,
        dt,
        A,
        B,
        C,
        mixer.D.float(),
        z=z,
        dt_bias=mixer.dt_proj.bias.float(),
        dt_softplus=True,
    )


def conv_step(x, conv_state, conv1d):
    """causal_conv1d's one-token update: shifts x into conv_state in place, returns silu(conv)."""
    return _conv_update()(x, conv_state, conv1d.weight[:, 0], conv1d.bias, "silu")
