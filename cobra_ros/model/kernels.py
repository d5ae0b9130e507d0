"""Optional CUDA kernels from `mamba_ssm` for the selective scan and the decoding step.

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


def available(x: torch.Tensor) -> bool:
    return x.is_cuda and _ops() is not None


def scan(x, dt, dt_proj, A, B, C, D, z):
    """Fresh-sequence selective scan with the gate fused. x, z: (b, L, d); dt: (b, L, r); B, C: (b, L, n)."""
    selective_scan_fn, _ = _ops()
    delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # bias and softplus are applied in the kernel
    y, last = selective_scan_fn(x.transpose(1, 2).contiguous(), delta.contiguous(), A,
                                B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.float(),
                                z.transpose(1, 2).contiguous(), delta_bias=dt_proj.bias.float(),
                                delta_softplus=True, return_last_state=True)
    return y.transpose(1, 2), last.float()


def step(x, z, mixer, ssm_state):
    """One decoding step after the conv (x: its output); updates ssm_state in place. Returns the gated output."""
    _, selective_state_update = _ops()
    dt, B, C = mixer._ssm_inputs(x)
    dt = dt @ mixer.dt_proj.weight.t()
    A = -torch.exp(mixer.A_log.float())
    return selective_state_update(ssm_state, x, dt, A, B, C, mixer.D.float(), z=z,
                                  dt_bias=mixer.dt_proj.bias.float(), dt_softplus=True)
