"""Model directories in the release layout: built from scratch, loaded bit-identically, bad ones
refused."""

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cobra_ros
from cobra_ros.model.checkpoint import CHECKPOINT, CheckpointError, load_model_dir
from cobra_ros.model.cobra import random_cobra
from cobra_ros.model.config import preset
from cobra_ros.model.tokenizer import ChatTokenizer, build_tokenizer


def test_a_release_layout_written_by_hand_loads(tmp_path):
    """No save helper: config.json, the checkpoint dict with the release's key names, timm tower
    files."""
    tok = ChatTokenizer.load(
        build_tokenizer(["Is the red moon left of the blue cube?"], 300, tmp_path / "tokenizer")
    )
    cfg = preset("micro", vocab_size=len(tok))
    model = random_cobra(cfg, seed=3)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    llm = {f"llm.{k}": v for k, v in model.llm.state_dict().items()}
    assert {
        "llm.backbone.embedding.weight",
        "llm.backbone.layers.0.mixer.in_proj.weight",
        "llm.backbone.layers.0.mixer.A_log",
        "llm.backbone.layers.1.norm.weight",
        "llm.backbone.norm_f.weight",
        "llm.lm_head.weight",
    } <= llm.keys()
    projector = model.projector.state_dict()
    assert set(projector) == {f"projector.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {"model": {"projector": projector, "llm_backbone": llm}},
        tmp_path / "checkpoints/latest-checkpoint.pt",
    )
    for name in ("dino", "siglip"):
        (tmp_path / "vision" / name).mkdir(parents=True)
        save_file(
            getattr(model.vision, name).state_dict(),
            str(tmp_path / "vision" / name / "model.safetensors"),
        )
    engine = cobra_ros.load(tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    ids = torch.tensor([tok.prompt_ids("Is the red moon left?")])
    with torch.no_grad():
        expected = model(torch.from_numpy(image[None]), ids, tok.bos_id)
        got = engine.model(torch.from_numpy(image[None]), ids, tok.bos_id)
    assert torch.equal(expected, got)


def test_saved_directory_loads_back_bit_identical(tiny_model_dir, tiny_engine):
    reloaded, _ = load_model_dir(tiny_model_dir)
    a, b = tiny_engine.model.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reloaded.llm.lm_head.weight is reloaded.llm.backbone.embedding.weight


@pytest.mark.parametrize("arch", ["linear", "gelu-mlp", "fused-ldpnet", "fused-ldpnet-pos"])
def test_projector_variants_round_trip(tmp_path, arch):
    from cobra_ros.cli.init import init_model_dir

    init_model_dir("micro", str(tmp_path / arch), arch=arch)
    engine = cobra_ros.load(tmp_path / arch)
    assert engine.model.cfg.projector_kind == arch
    frame = engine.encode(np.zeros((28, 28, 3), np.uint8))
    expected_tokens = 1 + (
        engine.model.cfg.ldp_grid**2
        if arch.startswith("fused-ldpnet")
        else engine.model.cfg.num_patches
    )
    assert frame.num_prefix_tokens == expected_tokens


@pytest.fixture
def broken(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def expect_refusal(path, *fragments):
    with pytest.raises(CheckpointError) as err:
        load_model_dir(path)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_missing_files_are_named(broken, tmp_path):
    expect_refusal(tmp_path / "nowhere", "not a directory")
    (broken / CHECKPOINT).unlink()
    expect_refusal(broken, "latest-checkpoint.pt", "missing")
    (broken / "vision/siglip/model.safetensors").unlink()
    expect_refusal(broken, "vision/siglip/model.safetensors", "missing")
    (broken / "tokenizer/tokenizer.json").unlink()
    expect_refusal(broken, "tokenizer.json", "missing")
    (broken / "config.json").unlink()
    expect_refusal(broken, "config.json", "missing")


def test_wrong_shapes_and_missing_keys_are_named(broken):
    data = torch.load(broken / CHECKPOINT, weights_only=True)
    data["model"]["llm_backbone"]["llm.backbone.layers.0.mixer.D"] = torch.zeros(3)
    del data["model"]["projector"]["projector.4.bias"]
    torch.save(data, broken / CHECKPOINT)
    expect_refusal(broken, "[projector]", "missing", "projector.4.bias")
    data["model"]["projector"]["projector.4.bias"] = torch.zeros(128)
    torch.save(data, broken / CHECKPOINT)
    expect_refusal(broken, "[llm_backbone]", "wrong shapes", "backbone.layers.0.mixer.D")


def test_unknown_ids_and_bad_json_are_refused(broken):
    config = json.loads((broken / "config.json").read_text())
    del config["cobra_ros"]
    (broken / "config.json").write_text(json.dumps(config))
    expect_refusal(broken, "unknown vision_backbone_id")
    (broken / "config.json").write_text("{not json")
    expect_refusal(broken, "config.json")


def test_pickled_objects_and_garbage_are_refused(broken):
    data = torch.load(broken / CHECKPOINT, weights_only=True)
    data["extra"] = argparse.Namespace(payload="would run code on load")
    torch.save(data, broken / CHECKPOINT)
    expect_refusal(broken, "refused", "pickled")
    (broken / CHECKPOINT).write_bytes(b"\x00garbage" * 10)
    expect_refusal(broken, "latest-checkpoint.pt")


def test_mismatched_tokenizer_is_refused(broken):
    shutil.rmtree(broken / "tokenizer")
    build_tokenizer([f"word{i} " * 3 for i in range(3000)], 3000, broken / "tokenizer")
    expect_refusal(broken, "tokenizer", "embeds only")
