import json

import numpy as np
import pytest

from cobra_ros.langtable import rlds
from cobra_ros.langtable.rlds import Episode, Step
from cobra_ros.langtable.tfrecord import decode_example, iter_records

SHAPE = (36, 64, 3)


def _episode(index, num_steps=4, terminal=True, instruction="push the red moon to the blue cube"):
    rng = np.random.default_rng(index)
    # Smooth images so JPEG stays close to the source.
    base = np.linspace(0, 255, SHAPE[1], dtype=np.float32)[None, :, None] * np.ones(SHAPE, np.float32)
    steps = []
    for t in range(num_steps):
        img = np.clip(base * (0.5 + 0.1 * t) + [40 * index, 0, 80], 0, 255).astype(np.uint8)
        steps.append(Step(
            rgb=img,
            effector_translation=rng.uniform(-0.3, 0.6, 2).astype(np.float32),
            effector_target_translation=rng.uniform(-0.3, 0.6, 2).astype(np.float32),
            action=rng.uniform(-0.1, 0.1, 2).astype(np.float32),
            reward=1.0 if t == num_steps - 2 else 0.0,
            is_first=t == 0, is_last=t == num_steps - 1,
            is_terminal=terminal and t == num_steps - 1,
            instruction=instruction,
        ))
    return Episode(f"episode-{index}", instruction, steps)


def test_instruction_codes():
    codes = rlds.encode_instruction("slide the yellow star tówards the left")
    assert codes.shape == (512,) and codes.dtype == np.int32
    assert rlds.decode_instruction(codes) == "slide the yellow star tówards the left"
    with pytest.raises(ValueError):
        rlds.encode_instruction("x" * 513)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_write_read_language_table_schema(tmp_path, fmt):
    episodes = [_episode(0), _episode(1, num_steps=3, terminal=False), _episode(2, num_steps=5)]
    paths = rlds.write_rlds(tmp_path, episodes, image_format=fmt, episodes_per_shard=2)
    assert [p.name for p in paths] == ["language_table-train.tfrecord-00000-of-00002",
                                       "language_table-train.tfrecord-00001-of-00002"]
    assert rlds.count_episodes(tmp_path) == 3

    # The raw records carry exactly the flattened Language-Table keys.
    raw = decode_example(next(iter_records(paths[0])))
    assert set(raw) == {"episode_id", "steps/action", "steps/reward", "steps/is_first", "steps/is_last",
                        "steps/is_terminal", "steps/observation/effector_translation",
                        "steps/observation/effector_target_translation", "steps/observation/instruction",
                        "steps/observation/rgb"}
    assert raw["steps/observation/instruction"].size == 512 * 4
    assert rlds.image_format(raw["steps/observation/rgb"][0]) == fmt

    spec = rlds.read_features(tmp_path)["steps/observation/rgb"]
    assert (spec.kind, spec.shape, spec.encoding, spec.per_step) == ("image", SHAPE, fmt, True)
    assert rlds.read_features(tmp_path)["steps/observation/instruction"].dtype == "int32"

    read = list(rlds.iter_episodes(tmp_path))
    assert [e.episode_id for e in read] == ["episode-0", "episode-1", "episode-2"]
    # Terminal steps are dropped by default: 4-1, 3 (no terminal), 5-1.
    assert [len(e.steps) for e in read] == [3, 3, 4]
    for got, want in zip(read, episodes):
        assert got.instruction == want.instruction
        for g, w in zip(got.steps, want.steps):
            assert g.rgb.shape == SHAPE and g.rgb.dtype == np.uint8
            if fmt == "png":
                np.testing.assert_array_equal(g.rgb, w.rgb)
            else:
                assert np.abs(g.rgb.astype(int) - w.rgb).mean() < 3
            np.testing.assert_array_equal(g.action, w.action)
            np.testing.assert_array_equal(g.effector_translation, w.effector_translation)
            np.testing.assert_array_equal(g.effector_target_translation, w.effector_target_translation)
            assert (g.reward, g.is_first, g.is_last, g.is_terminal) == (w.reward, w.is_first, w.is_last, w.is_terminal)

    kept = list(rlds.iter_episodes(tmp_path, drop_terminal=False))
    assert [len(e.steps) for e in kept] == [4, 3, 5]
    assert kept[0].steps[-1].is_terminal and kept[0].steps[-1].is_last


def test_image_decoded_by_magic_bytes_and_checked_against_features(tmp_path):
    rlds.write_rlds(tmp_path, [_episode(0)], image_format="jpeg")
    features_path = tmp_path / "features.json"
    features = json.loads(features_path.read_text())
    rgb = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"][
        "observation"]["featuresDict"]["features"]["rgb"]["image"]
    rgb["encodingFormat"] = "png"  # the label lies; the bytes are JPEG
    features_path.write_text(json.dumps(features))
    assert next(rlds.iter_episodes(tmp_path)).steps[0].rgb.shape == SHAPE
    rgb["shape"]["dimensions"] = ["48", "64", "3"]
    features_path.write_text(json.dumps(features))
    with pytest.raises(ValueError, match="decoded shape"):
        next(rlds.iter_episodes(tmp_path))


def test_step_lengths_must_agree(tmp_path):
    rlds.write_rlds(tmp_path, [_episode(0)])
    example = decode_example(next(iter_records(next(tmp_path.glob("*.tfrecord-*")))))
    example["steps/action"] = example["steps/action"][:-2]
    with pytest.raises(ValueError, match="steps"):
        rlds.parse_episode(example, rlds.read_features(tmp_path))
