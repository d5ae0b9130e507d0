"""The Mamba reference: parallel prefill, chunked scan and single-step recurrence agree."""
import torch

from cobra_ros.model.config import MambaConfig
from cobra_ros.model.mamba import MambaLM, MambaState, init_weights, recurrent_scan, selective_scan

TOL = 1e-4  # float32 on CPU; observed differences are ~1e-6


def naive_scan(x, delta, A, B, C, D):
    """The recurrence as written in the paper, one (batch, channel) pair at a time."""
    b, L, d = x.shape
    y = torch.zeros(b, L, d)
    h = torch.zeros(b, d, A.shape[1])
    for i in range(b):
        for c in range(d):
            state = torch.zeros(A.shape[1])
            for t in range(L):
                state = torch.exp(delta[i, t, c] * A[c]) * state + delta[i, t, c] * B[i, t] * x[i, t, c]
                y[i, t, c] = (state * C[i, t]).sum() + D[c] * x[i, t, c]
            h[i, c] = state
    return y, h


def test_chunked_and_recurrent_scans_match_the_recurrence_even_when_chunks_must_split():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 2, 40, 6, 4
    x, B, C = torch.randn(b, L, d, generator=g), torch.randn(b, L, n, generator=g), torch.randn(b, L, n, generator=g)
    A, D = -torch.rand(d, n, generator=g) * 16, torch.randn(d, generator=g)
    # 2.0 makes a 16-step chunk decay past exp(-60), so the chunked scan must split it; 10.0 makes single
    # steps decay past it
    for scale in (0.05, 2.0, 10.0):
        delta = torch.rand(b, L, d, generator=g) * scale
        y_ref, h_ref = naive_scan(x, delta, A, B, C, D)
        for scan in (selective_scan, recurrent_scan):
            y, h = scan(x, delta, A, B, C, D)
            assert torch.allclose(y, y_ref, atol=TOL, rtol=TOL)
            assert torch.allclose(h, h_ref, atol=TOL, rtol=TOL)


def small_lm(seed=0):
    torch.manual_seed(seed)
    lm = MambaLM(MambaConfig(d_model=48, n_layer=3, vocab_size=97))
    init_weights(lm, torch.Generator().manual_seed(seed))
    return lm.eval()


@torch.no_grad()
def test_parallel_prefill_equals_step_by_step_decoding():
    lm = small_lm()
    ids = torch.randint(0, 97, (2, 41), generator=torch.Generator().manual_seed(1))
    logits, state = lm(lm.embed(ids))
    stepped = MambaState.zeros(lm.cfg, 2)
    step_logits = torch.stack([lm.step(ids[:, t], stepped) for t in range(ids.shape[1])], 1)
    assert (logits - step_logits).abs().max() < TOL
    assert (state.ssm - stepped.ssm).abs().max() < TOL
    assert (state.conv - stepped.conv).abs().max() < TOL


@torch.no_grad()
def test_prefill_continues_from_a_state_and_leaves_it_untouched():
    lm = small_lm()
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(2))
    full, _ = lm(lm.embed(ids))
    _, mid = lm(lm.embed(ids[:, :13]))
    before = mid.clone()
    rest, _ = lm(lm.embed(ids[:, 13:]), mid)
    assert (rest - full[:, 13:]).abs().max() < TOL
    assert torch.equal(before.ssm, mid.ssm) and torch.equal(before.conv, mid.conv)


def test_state_size_is_fixed_by_the_config_not_the_sequence():
    lm = small_lm()
    sizes = {lm(lm.embed(torch.zeros(1, L, dtype=torch.long)))[1].nbytes for L in (1, 17, 300)}
    cfg = lm.cfg
    assert sizes == {cfg.n_layer * cfg.d_inner * (cfg.d_conv + cfg.d_state) * 4}
