"""The Mamba reference: parallel prefill, chunked scan and single-step recurrence agree."""
import torch

from cobra_ros.model.config import MambaConfig
from cobra_ros.model.mamba import MambaLM, MambaState, init_weights, selective_scan

TOL = 1e-4  # float32 on CPU; observed differences are ~1e-6


def sequential_scan(x, delta, A, B, C, D):
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = h * torch.exp(delta[:, t, :, None] * A) + (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1) + x * D, h


def test_chunked_scan_matches_the_recurrence_even_when_chunks_must_split():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 2, 70, 24, 8
    x, B, C = torch.randn(b, L, d, generator=g), torch.randn(b, L, n, generator=g), torch.randn(b, L, n, generator=g)
    A, D = -torch.rand(d, n, generator=g) * 16, torch.randn(d, generator=g)
    for scale in (0.05, 2.0):  # 2.0 makes a 16-step chunk decay past exp(-60): the scan must split it
        delta = torch.rand(b, L, d, generator=g) * scale
        y, h = selective_scan(x, delta, A, B, C, D)
        y_ref, h_ref = sequential_scan(x, delta, A, B, C, D)
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
