"""The CUDA path against the CPU reference (skipped without CUDA; run on the GPU device)."""
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
        got = gpu.model(torch.from_numpy(image[None]).cuda(), ids.cuda(), gpu.tokenizer.bos_id)[0, -1].float().cpu()
    assert (ref - got).abs().max() < 0.05 * ref.abs().max() + 0.05


def test_kernels_are_used_when_mamba_ssm_is_installed():
    x = torch.zeros(1, device="cuda")
    assert kernels.available(x) == (kernels._ops() is not None)
