"""The CUDA path (kernels, CUDA graphs, padded batches) against the CPU reference.

Skipped without CUDA; tools/gpu_check.sh runs them on the GPU machine."""

import numpy as np
import pytest
import torch

import cobra_ros
from cobra_ros.model import kernels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_gpu_path_matches_the_cpu_reference(tiny_model_dir):
    cpu = cobra_ros.load(tiny_model_dir, device="cpu", dtype="float32")
    gpu = cobra_ros.load(tiny_model_dir, device="cuda", dtype="float32")
    image = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    question = "Describe the image specifically."
    a = cpu.ask(cpu.encode(image), question, max_new_tokens=64, stop_at_eos=False)
    b = gpu.ask(gpu.encode(image), question, max_new_tokens=64, stop_at_eos=False)
    assert a.token_ids == b.token_ids
    ids = torch.tensor([cpu.tokenizer.prompt_ids(question) + a.token_ids])
    pixels = torch.from_numpy(image[None])
    with torch.no_grad():
        ref = cpu.model(pixels, ids, cpu.tokenizer.bos_id)
        got = gpu.model(pixels.cuda(), ids.cuda(), gpu.tokenizer.bos_id).cpu()
    assert torch.allclose(ref, got, atol=2e-3, rtol=2e-3)


def test_bf16_logits_stay_within_bf16_tolerance(tiny_model_dir):
    cpu = cobra_ros.load(tiny_model_dir, device="cpu", dtype="float32")
    gpu = cobra_ros.load(tiny_model_dir, device="cuda", dtype="bfloat16")
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ids = torch.tensor([cpu.tokenizer.prompt_ids("Is there a red moon?")])
    with torch.no_grad():
        ref = cpu.model(torch.from_numpy(image[None]), ids, cpu.tokenizer.bos_id)[0, -1]
        got = (
            gpu.model(torch.from_numpy(image[None]).cuda(), ids.cuda(), gpu.tokenizer.bos_id)[
                0, -1
            ]
            .float()
            .cpu()
        )
    assert (ref - got).abs().max() < 0.05 * ref.abs().max() + 0.05


def test_kernels_are_used_when_mamba_ssm_is_installed():
    x = torch.zeros(1, device="cuda")
    assert kernels.available(x) == (kernels._ops() is not None)


def small_cuda_lm(seed=0, dtype=torch.float32):
    from cobra_ros.model.config import MambaConfig
    from cobra_ros.model.mamba import MambaLM, init_weights

    torch.manual_seed(seed)
    lm = MambaLM(MambaConfig(d_model=64, n_layer=4, vocab_size=101))
    init_weights(lm, torch.Generator().manual_seed(seed))
    return lm.eval().to("cuda", dtype)


@torch.inference_mode()
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cuda_graph_replay_gives_the_eager_static_tokens(batch):
    from cobra_ros.model.mamba import StaticDecoder

    lm = small_cuda_lm(batch)
    ids = torch.randint(0, 101, (batch, 12), device="cuda")
    _, state = lm(lm.embed(ids))
    tokens = {}
    for graph in (False, True):
        decoder = StaticDecoder(lm, batch, graph=graph)
        decoder.load(state)
        token, out, logits = ids[:, -1], [], []
        for _ in range(32):
            step = decoder.step(token)
            logits.append(step.clone())
            token = step.argmax(-1)
            out.append(token)
        tokens[graph] = (torch.stack(out), torch.stack(logits))
        assert decoder.graph_error is None and (decoder._graph is not None) == graph
    assert torch.equal(tokens[False][0], tokens[True][0])
    assert torch.allclose(tokens[False][1], tokens[True][1], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_padded_prefill_on_cuda_matches_each_sequence_alone():
    lm = small_cuda_lm(7)
    lengths = [5, 17, 1, 9]
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(0, 101, (L,), generator=g) for L in lengths]
    padded = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    logits, state = lm(lm.embed(padded.cuda()), lengths=torch.tensor(lengths, device="cuda"))
    for i, s in enumerate(seqs):
        alone, alone_state = lm(lm.embed(s[None].cuda()), last_only=True)
        assert torch.allclose(logits[i], alone[0], atol=1e-4, rtol=1e-4)
        assert torch.allclose(state.ssm[:, i], alone_state.ssm[:, 0], atol=1e-4, rtol=1e-4)


def test_yes_no_batch_on_the_gpu_matches_the_cpu(tiny_model_dir):
    cpu = cobra_ros.load(tiny_model_dir, device="cpu", dtype="float32")
    gpu = cobra_ros.load(tiny_model_dir, device="cuda", dtype="float32")
    image = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    questions = [
        "Is there a red moon?",
        "Is the blue cube left of the green star on the table?",
        "Red?",
    ]
    a = cpu.yes_no_batch([cpu.encode(image)] * 3, questions)
    b = gpu.yes_no_batch([gpu.encode(image)] * 3, questions)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3


@torch.inference_mode()
def test_kernel_scan_continues_a_state_and_stops_at_each_length():
    import torch.nn.functional as F

    from cobra_ros.model.mamba import selective_scan

    if kernels._ops() is None:
        pytest.skip("needs mamba_ssm")
    mixer = small_cuda_lm(9).backbone.layers[0].mixer
    b, L = 3, 40
    x, z = torch.randn(b, L, 128, device="cuda"), torch.randn(b, L, 128, device="cuda")
    dt, B, C = mixer._ssm_inputs(x)
    A = -torch.exp(mixer.A_log.float())
    h0 = torch.randn(b, 128, 16, device="cuda")
    lengths = torch.tensor([[40], [7], [23]], device="cuda")
    mask = (torch.arange(L, device="cuda") < lengths).float()
    y, h = kernels.scan(x, dt, mixer.dt_proj, A, B, C, mixer.D, z, mask, h0)
    delta = F.softplus(mixer.dt_proj(dt).float()) * mask[..., None]
    y_ref, h_ref = selective_scan(x, delta, A, B, C, mixer.D.float(), h0)
    assert torch.allclose(y, y_ref * F.silu(z), atol=1e-3, rtol=1e-3)
    assert torch.allclose(h, h_ref, atol=1e-3, rtol=1e-3)


@torch.inference_mode()
def test_captured_prefill_gives_the_eager_logits_and_state():
    from cobra_ros.model.mamba import StaticPrefill

    lm = small_cuda_lm(11)
    _, start = lm(lm.embed(torch.randint(0, 101, (1, 20), device="cuda")))
    out = {}
    for graph in (False, True):
        prefill = StaticPrefill(lm, 1, 32, graph=graph)
        for L in (7, 19):  # two questions through the same graph
            ids = torch.arange(L, device="cuda")[None] % 101
            logits, after = prefill.run(ids, torch.tensor([L], device="cuda"), start)
            out[graph, L] = (logits.clone(), after.ssm.clone())
        assert prefill.graph_error is None and (prefill._graph is not None) == graph
    for L in (7, 19):
        assert torch.allclose(out[False, L][0], out[True, L][0], atol=1e-5, rtol=1e-5)
        assert torch.allclose(out[False, L][1], out[True, L][1], atol=1e-5, rtol=1e-5)
