"""A model directory written exactly as the authors' release writes it, read back by our loader.

config.json holds only the release's blocks (no "cobra_ros" one), with the release's ids; the
checkpoint is `{"model": {"projector": ..., "llm_backbone": ...}}` under the release's key names.
The release's shapes (a 2.8B LM) are too large for a test, so the registries behind those ids are
given small shapes of the same kind: 384 px towers (27 x 27 = 729 patches) and a 2-layer LM.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cobra_ros.model import config as config_module
from cobra_ros.model.checkpoint import CHECKPOINT, TOWER_FILES, TOKENIZER_DIR
from cobra_ros.model.cobra import Cobra, random_cobra
from cobra_ros.model.config import CobraConfig, MambaConfig, TowerConfig
from cobra_ros.model.engine import CobraEngine
from cobra_ros.model.scoring import SHORT_ANSWER
from cobra_ros.model.tokenizer import build_tokenizer

# The release's config.json for cobra+3b: its "model" block (cobra/conf/models.py, Cobra_3B) and
# the run's other blocks, which a loader must ignore.
RELEASE_CONFIG = {
    "model": {
        "type": "cobra+3b",
        "model_id": "cobra+3b",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "vision_backbone_id": "dinosiglip-vit-so-384px",
        "llm_backbone_id": "mamba-2.8b-zephyr",
        "image_resize_strategy": "resize-naive",
        "llm_max_length": 2048,
        "align_epochs": 1,
        "align_max_steps": None,
        "align_global_batch_size": 256,
        "finetune_epochs": 2,
        "finetune_max_steps": None,
        "finetune_global_batch_size": 128,
        "finetune_learning_rate": 2e-05,
        "enable_gradient_checkpointing": True,
        "enable_mixed_precision_training": True,
        "reduce_in_full_precision": False,
    },
    "dataset": {"type": "llava-lvis4v-lrv", "dataset_id": "llava-lvis4v-lrv"},
    "stage": "finetune",
    "pretrained_checkpoint": None,
    "run_id": "cobra+3b",
    "seed": 7,
}
# The release's Zephyr turn (cobra/models/backbones/llm/prompting/zephyr_prompter.py): no BOS.
ZEPHYR_TURN = "<|user|>\n{}<|endoftext|>\n<|assistant|>\n"
SIZE = 384


def release_llm_keys(n_layer: int) -> list[str]:
    """Keys of the release's llm_backbone state dict: MambaForCausalLM wrapped as `.llm`."""
    mixer = [
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
        "out_proj.weight",
    ]
    keys = ["llm.backbone.embedding.weight", "llm.backbone.norm_f.weight", "llm.lm_head.weight"]
    for i in range(n_layer):
        keys += [f"llm.backbone.layers.{i}.mixer.{k}" for k in mixer]
        keys.append(f"llm.backbone.layers.{i}.norm.weight")
    return keys


RELEASE_PROJECTOR_KEYS = [f"projector.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "cobra+3b"
    tok_dir = build_tokenizer(
        ["Is there a cat in the image?", "a dog on a red sofa"], 600, root / TOKENIZER_DIR
    )
    vocab = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])
    towers = tuple(
        TowerConfig(t.timm_name, SIZE, t.mean, t.std, dict(embed_dim=32, depth=2, num_heads=2))
        for t in config_module.VISION_BACKBONES["dinosiglip-vit-so-384px"]
    )
    llm = MambaConfig(d_model=48, n_layer=2, vocab_size=vocab)
    patch = pytest.MonkeyPatch()
    patch.setitem(config_module.VISION_BACKBONES, "dinosiglip-vit-so-384px", towers)
    patch.setitem(config_module.LLM_BACKBONES, "mamba-2.8b-zephyr", llm)
    (root / "config.json").write_text(json.dumps(RELEASE_CONFIG, indent=2))
    cfg = CobraConfig.from_json(RELEASE_CONFIG)
    model = random_cobra(cfg, seed=3)
    ours = model.llm.state_dict()
    llm_state = {k: ours[k.removeprefix("llm.")].clone() for k in release_llm_keys(llm.n_layer)}
    projector = model.projector.state_dict()
    assert sorted(projector) == sorted(RELEASE_PROJECTOR_KEYS)
    (root / CHECKPOINT).parent.mkdir(parents=True)
    torch.save(
        {
            "model": {
                "projector": {k: projector[k] for k in RELEASE_PROJECTOR_KEYS},
                "llm_backbone": llm_state,
            }
        },
        root / CHECKPOINT,
    )
    for name, rel in TOWER_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in getattr(model.vision, name).state_dict().items()},
            str(root / rel),
        )
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def engine(release_dir):
    return CobraEngine.load(release_dir)


@pytest.fixture(scope="module")
def release_tokenizer(release_dir):
    from transformers import AutoTokenizer

    # as the release loads it (base_llm.py): model_max_length = llm_max_length
    return AutoTokenizer.from_pretrained(str(release_dir / TOKENIZER_DIR), model_max_length=2048)


def test_release_config_gets_the_release_sequence_and_resampler(engine):
    cfg = engine.model.cfg
    assert (cfg.model_id, cfg.bos_before_image, cfg.resample) == ("cobra+3b", False, "pil")
    assert cfg.num_patches == 729


def test_frame_prefix_is_the_729_image_tokens_without_bos(engine, rgb):
    image = rgb(0, 480, 640)
    frame = engine.encode(image)
    assert frame.num_prefix_tokens == 729
    model = engine.model
    with torch.inference_mode():
        tokens = model.image_tokens(torch.from_numpy(image[None]))
        assert tokens.shape[1] == 729
        _, alone = model.llm(tokens, last_only=True)
        bos = model.llm.embed(torch.tensor([[engine.tokenizer.eos_id]]))
        _, with_bos = model.llm(torch.cat([bos, tokens], 1), last_only=True)
    assert torch.equal(frame.state.ssm, alone.ssm) and torch.equal(frame.state.conv, alone.conv)
    assert not torch.allclose(frame.state.ssm, with_bos.ssm)


QUESTIONS = [
    "Is there a cat in the image?",
    "<image>\nWhat colour is the sofa?",
    "Is there a dog in the image?" + SHORT_ANSWER,
    'Based on the image, is this statement "True" or "False"? The dog is on the sofa.'
    '\nRespond with "True" or "False" directly.',
]


@pytest.mark.parametrize("question", QUESTIONS)
def test_prompt_ids_are_the_release_zephyr_turn(engine, release_tokenizer, question):
    text = ZEPHYR_TURN.format(question.replace("<image>", "").strip())
    expected = release_tokenizer(text, truncation=True).input_ids
    assert engine.tokenizer.prompt_ids(question, engine.model.cfg.llm_max_length) == expected
    assert expected[0] != release_tokenizer.bos_token_id  # the tokenizer adds no BOS


def test_overlong_prompt_is_truncated_as_the_release_does(engine, release_tokenizer):
    question = "a dog on a red sofa " * 700  # well over 2048 tokens
    expected = release_tokenizer(ZEPHYR_TURN.format(question.strip()), truncation=True).input_ids
    got = engine.tokenizer.prompt_ids(question, engine.model.cfg.llm_max_length)
    assert len(expected) == 2048 and got == expected


@pytest.mark.parametrize(
    "scoring,words,question",
    [
        ("pope", ("Yes", "No"), "Is there a dog in the image?"),
        ("vsr", ("True", "False"), "The dog is on the sofa."),
    ],
)
def test_scoring_matches_the_release_computation(
    engine, release_tokenizer, rgb, scoring, words, question
):
    """P(positive) as the release's generate_batch computes it: softmax of the first generated
    token's
    logits over the vocabulary after [image, prompt ids], renormalised over the two answer
    words."""
    from cobra_ros.model.scoring import SCORINGS

    image = rgb(1, 300, 500)
    frame = engine.encode(image)
    got = engine.yes_no(frame, question, scoring=scoring)
    prompt = ZEPHYR_TURN.format(SCORINGS[scoring].prompt(question).strip())
    ids = torch.tensor([release_tokenizer(prompt, truncation=True).input_ids])
    pair = [release_tokenizer.encode(w, add_special_tokens=False)[0] for w in words]
    model: Cobra = engine.model
    with torch.inference_mode():
        embeds = torch.cat(
            [model.image_tokens(torch.from_numpy(image[None])), model.llm.embed(ids)], 1
        )
        probs = torch.softmax(model.llm(embeds)[0][0, -1].float(), -1)[pair]
    assert got == pytest.approx(float(probs[0] / probs.sum()), abs=1e-5)


def test_our_own_model_keeps_its_bos_sequence(tiny_engine, rgb):
    cfg = tiny_engine.model.cfg
    assert cfg.bos_before_image and cfg.resample == "pil"  # written by cobra-init today
    assert tiny_engine.encode(rgb(0)).num_prefix_tokens == cfg.num_patches + 1


def test_bundled_model_config_says_bos_and_torch_resampling():
    from cobra_ros.model.checkpoint import read_config
    from cobra_ros.paths import default_model_path

    cfg = read_config(default_model_path())
    assert cfg.bos_before_image and cfg.resample == "torch"


def test_block_of_ours_without_the_new_fields_means_what_it_was_trained_with(tiny_model_dir):
    data = json.loads((tiny_model_dir / "config.json").read_text())
    for key in ("bos_before_image", "resample"):
        data["cobra_ros"].pop(key)
    cfg = CobraConfig.from_json(data)
    assert cfg.bos_before_image and cfg.resample == "torch"
