"""The Mamba reference: parallel prefill, chunked scan, padded batches, single-step recurrence
and the static decoder agree."""

import pytest
import torch

from cobra_ros.model.config import MambaConfig
from cobra_ros.model.mamba import (
    MambaLM,
    MambaState,
    StaticDecoder,
    StaticPrefill,
    from_state,
    init_weights,
    prefill_scan,
    recurrent_scan,
    selective_scan,
)

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
                state = (
                    torch.exp(delta[i, t, c] * A[c]) * state
                    + delta[i, t, c] * B[i, t] * x[i, t, c]
                )
                y[i, t, c] = (state * C[i, t]).sum() + D[c] * x[i, t, c]
            h[i, c] = state
    return y, h


def test_chunked_and_recurrent_scans_match_the_recurrence_even_when_chunks_must_split():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 2, 40, 6, 4
    x, B, C = (
        torch.randn(b, L, d, generator=g),
        torch.randn(b, L, n, generator=g),
        torch.randn(b, L, n, generator=g),
    )
    A, D = -torch.rand(d, n, generator=g) * 16, torch.randn(d, generator=g)
    # 2.0 makes a 16-step chunk decay past exp(-60), so the chunked scan must split it; 10.0
    # makes single steps decay past it
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


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 3])
def test_static_decoder_gives_exactly_the_tokens_and_logits_of_the_plain_step(batch):
    lm = small_lm(3)
    ids = torch.randint(0, 97, (batch, 9), generator=torch.Generator().manual_seed(batch))
    _, state = lm(lm.embed(ids))
    decoder = StaticDecoder(lm, batch)
    buffers = (
        decoder.state.conv.data_ptr(),
        decoder.state.ssm.data_ptr(),
        decoder.logits.data_ptr(),
    )
    decoder.load(state)
    plain, tokens_plain, tokens_static = state.clone(), [], []
    token = ids[:, -1]
    for _ in range(20):  # greedy, each path fed its own choice
        token = lm.step(token, plain).argmax(-1)
        tokens_plain.append(token)
    token = ids[:, -1]
    for i in range(20):
        logits = decoder.step(token)
        if i == 0:
            assert torch.equal(logits, lm.step(ids[:, -1], state.clone()))
        token = logits.argmax(-1)
        tokens_static.append(token)
    assert torch.equal(torch.stack(tokens_plain), torch.stack(tokens_static))
    assert torch.equal(decoder.state.ssm, plain.ssm) and torch.equal(
        decoder.state.conv, plain.conv
    )
    # the state and logits were written in place: a CUDA graph replays against the same memory
    assert buffers == (
        decoder.state.conv.data_ptr(),
        decoder.state.ssm.data_ptr(),
        decoder.logits.data_ptr(),
    )
    assert not torch.equal(
        state.ssm, decoder.state.ssm
    )  # load copied: the caller's state did not move


@torch.no_grad()
def test_right_padded_batch_with_lengths_equals_each_sequence_alone():
    lm = small_lm(4)
    g = torch.Generator().manual_seed(5)
    _, start = lm(lm.embed(torch.randint(0, 97, (1, 11), generator=g)))
    lengths = [7, 1, 23, 16]
    seqs = [torch.randint(0, 97, (L,), generator=g) for L in lengths]
    padded = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    states = MambaState.cat([start] * len(seqs))
    for state in (None, states):  # fresh sequences and continuing one frame's state
        logits, after = lm(lm.embed(padded), state, lengths=torch.tensor(lengths))
        for i, s in enumerate(seqs):
            alone, alone_state = lm(
                lm.embed(s[None]), None if state is None else start, last_only=True
            )
            assert (logits[i] - alone[0]).abs().max() < 1e-5
            assert (after.ssm[:, i] - alone_state.ssm[:, 0]).abs().max() < 1e-5
            assert (after.conv[:, i] - alone_state.conv[:, 0]).abs().max() < 1e-5


def test_prefill_scan_rule_uses_the_loop_on_cpu_and_chunks_elsewhere():
    x = torch.zeros(1, 1, 1)
    with torch.no_grad():
        assert prefill_scan(x) is recurrent_scan
        assert (
            prefill_scan(x.to("meta")) is selective_scan
        )  # any non-CPU device, as CUDA without mamba_ssm
    with torch.enable_grad():
        assert (
            prefill_scan(x.to("meta")) is recurrent_scan
        )  # training: the loop's smaller autograd graph


def test_a_kept_state_adds_linearly_to_a_scan_from_zero():
    """How the CUDA kernel, which always starts from zero, continues a frame's state."""
    g = torch.Generator().manual_seed(8)
    b, L, d, n = 2, 300, 5, 4  # longer than from_state's 256-token block
    x, B, C = (torch.randn(b, L, k, generator=g) for k in (d, n, n))
    A, D = -torch.rand(d, n, generator=g) * 4, torch.randn(d, generator=g)
    h0 = torch.randn(b, d, n, generator=g)
    delta = torch.rand(b, L, d, generator=g) * 0.1
    y, h = recurrent_scan(x, delta, A, B, C, D, h0)
    y0, h_zero = recurrent_scan(x, delta, A, B, C, D)
    y_add, h_add = from_state(h0, delta, A, C)
    assert torch.allclose(y0 + y_add, y, atol=1e-5)
    assert torch.allclose(h_zero + h_add, h, atol=1e-5)
    assert (y_add[:, -1].abs().max() > 1e-4) and (h_add.abs().max() > 1e-4)  # h0 still matters


@torch.no_grad()
def test_static_prefill_pads_to_its_length_and_gives_each_prompt_s_logits_and_state():
    lm = small_lm(6)
    g = torch.Generator().manual_seed(6)
    _, start = lm(lm.embed(torch.randint(0, 97, (2, 9), generator=g)))
    ids = torch.randint(0, 97, (2, 13), generator=g)
    lengths = torch.tensor([13, 5])
    prefill = StaticPrefill(lm, 2, 32)
    for _ in range(2):  # the second run overwrites the first's buffers in place
        logits, after = prefill.run(ids, lengths, start)
    for i, L in enumerate(lengths.tolist()):
        alone, alone_state = lm(lm.embed(ids[i:i + 1, :L]), start.select(slice(i, i + 1)),
                                last_only=True)
        assert (logits[i] - alone[0, -1]).abs().max() < 1e-5
        assert (after.ssm[:, i] - alone_state.ssm[:, 0]).abs().max() < 1e-5
        assert (after.conv[:, i] - alone_state.conv[:, 0]).abs().max() < 1e-5
