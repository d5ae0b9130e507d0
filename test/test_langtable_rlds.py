import json
from pathlib import Path

import numpy as np
import pytest

from cobra_ros.langtable import rlds
from cobra_ros.langtable.rlds import Episode, Step
from cobra_ros.langtable.tfrecord import decode_example, iter_records

SHAPE = (36, 64, 3)


def _episode(index, num_steps=4, terminal=True, instruction="push the red moon to the blue cube"):
    rng = np.random.default_rng(index)
    # Smooth images so JPEG stays close to the source.
    ramp = np.linspace(0, 255, SHAPE[1], dtype=np.float32)[None, :, None]
    base = ramp * np.ones(SHAPE, np.float32)
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
    assert set(raw) == {"episode_id", "steps/action", "steps/reward", "steps/is_first",
                        "steps/is_last", "steps/is_terminal",
                        "steps/observation/effector_translation",
                        "steps/observation/effector_target_translation",
                        "steps/observation/instruction", "steps/observation/rgb"}
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
            np.testing.assert_array_equal(g.effector_target_translation,
                                          w.effector_target_translation)
            for name in ("reward", "is_first", "is_last", "is_terminal"):
                assert getattr(g, name) == getattr(w, name)

    kept = list(rlds.iter_episodes(tmp_path, drop_terminal=False))
    assert [len(e.steps) for e in kept] == [4, 3, 5]
    assert kept[0].steps[-1].is_terminal and kept[0].steps[-1].is_last


def test_image_decoded_by_magic_bytes_and_checked_against_features(tmp_path):
    rlds.write_rlds(tmp_path, [_episode(0)], image_format="jpeg")
    features_path = tmp_path / "features.json"
    features = json.loads(features_path.read_text())
    step = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    observation = step["featuresDict"]["features"]["observation"]
    rgb = observation["featuresDict"]["features"]["rgb"]["image"]
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


# A dataset_info.json as tensorflow-datasets writes it (protobuf JSON: camelCase, int64 as
# strings).
def _tfds_info(template=None, lengths=("2", "1"), name="language_table"):
    split = {"name": "train", "numBytes": "1234", "shardLengths": list(lengths)}
    if template is not None:
        split["filepathTemplate"] = template
    return {
        "name": name,
        "fileFormat": "tfrecord",
        "version": "0.0.1",
        "moduleName": "x.y",
        "splits": [split],
    }


@pytest.mark.parametrize(
    "template, names",
    [
        (
            "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            [
                "language_table-train.tfrecord-00000-of-00002",
                "language_table-train.tfrecord-00001-of-00002",
            ],
        ),
        (
            "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}",
            ["language_table-train.tfrecord-00000", "language_table-train.tfrecord-00001"],
        ),
        (
            "{SPLIT}/{DATASET}-{SHARD_INDEX}-of-{NUM_SHARDS}.{FILEFORMAT}",
            [
                "train/language_table-00000-of-00002.tfrecord",
                "train/language_table-00001-of-00002.tfrecord",
            ],
        ),
    ],
)
def test_shards_named_by_the_template_in_dataset_info(tmp_path, template, names):
    episodes = [_episode(0), _episode(1), _episode(2)]
    paths = rlds.write_rlds(tmp_path, episodes, episodes_per_shard=2, filename_template=template)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == names
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["splits"][0]["filepathTemplate"] == template
    assert rlds.shard_paths(tmp_path) == paths
    assert [e.episode_id for e in rlds.iter_episodes(tmp_path)] == [
        "episode-0",
        "episode-1",
        "episode-2",
    ]
    # seeking by shard lengths lands on the right episode in either naming
    assert [e.episode_id for e in rlds.iter_episodes(tmp_path, start=2)] == ["episode-2"]


def test_shard_names_follow_tfds_dataset_info(tmp_path):
    # Files laid out by hand the way TFDS names them from this dataset_info.json.
    written = rlds.write_rlds(
        tmp_path / "w", [_episode(0), _episode(1), _episode(2)], episodes_per_shard=2
    )
    (tmp_path / "w" / "features.json").rename(tmp_path / "features.json")
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(_tfds_info("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}"))
    )
    for index, path in enumerate(written):
        path.rename(tmp_path / f"language_table-train.tfrecord-{index:05d}")
    assert [p.name for p in rlds.shard_paths(tmp_path)] == [
        "language_table-train.tfrecord-00000",
        "language_table-train.tfrecord-00001",
    ]
    assert rlds.count_episodes(tmp_path) == 3
    assert len(list(rlds.iter_episodes(tmp_path))) == 3


def test_shard_digits_grow_with_the_shard_count():
    # naming.py pads to max(5, digits of the shard count)
    names = rlds.shard_filenames(rlds.DEFAULT_FILENAME_TEMPLATE, "d", "train", "tfrecord", 123456)
    assert names[7] == "d-train.tfrecord-000007-of-123456"
    assert rlds.shard_filenames(
        "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}", "d", "test", "tfrecord", 3
    ) == ["d-test.tfrecord-00000", "d-test.tfrecord-00001", "d-test.tfrecord-00002"]


def test_an_empty_template_means_the_tfds_default(tmp_path):
    # TFDS before 4.6 wrote no filepathTemplate; its files carry the -of- suffix.
    rlds.write_rlds(tmp_path, [_episode(0)])
    (tmp_path / "dataset_info.json").write_text(json.dumps(_tfds_info(None, lengths=("1",))))
    assert [p.name for p in rlds.shard_paths(tmp_path)] == [
        "language_table-train.tfrecord-00000-of-00001"
    ]


@pytest.mark.parametrize(
    "names",
    [
        [
            "language_table-train.tfrecord-00000-of-00002",
            "language_table-train.tfrecord-00001-of-00002",
        ],
        ["language_table-train.tfrecord-00000", "language_table-train.tfrecord-00001"],
    ],
)
def test_without_dataset_info_shards_are_found_by_name(tmp_path, names):
    written = rlds.write_rlds(
        tmp_path / "w", [_episode(0), _episode(1), _episode(2)], episodes_per_shard=2
    )
    (tmp_path / "w" / "features.json").rename(tmp_path / "features.json")
    for path, name in zip(reversed(written), reversed(names)):
        path.rename(tmp_path / name)
    (tmp_path / "language_table-test.tfrecord-00000").write_bytes(b"")  # another split: not ours
    (tmp_path / ".language_table-train.tfrecord-00002.partial").write_bytes(
        b""
    )  # unfinished write
    assert [p.name for p in rlds.shard_paths(tmp_path)] == names  # in shard order
    assert [e.episode_id for e in rlds.iter_episodes(tmp_path)] == [
        "episode-0",
        "episode-1",
        "episode-2",
    ]
    assert rlds.count_episodes(tmp_path) is None


def test_missing_shards_and_other_formats_are_named(tmp_path):
    rlds.write_rlds(tmp_path, [_episode(0), _episode(1)], episodes_per_shard=1)
    (tmp_path / "language_table-train.tfrecord-00001-of-00002").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 'train' shards.*00001-of-00002"):
        rlds.shard_paths(tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'test' TFRecord shards"):
        rlds.shard_paths(tmp_path, "test")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    (tmp_path / "dataset_info.json").write_text(json.dumps(dict(info, fileFormat="array_record")))
    with pytest.raises(ValueError, match="array_record"):
        rlds.shard_paths(tmp_path)


TFDS_WRITTEN = Path(__file__).parent / "data" / "tfds_shard_index"


def test_reads_shards_tensorflow_datasets_wrote_and_named_by_index():
    # Written and read back by tensorflow-datasets itself (see make.py there): shards named
    # language_table-train.tfrecord-NNNNN, the template recorded in TFDS's dataset_info.json.
    assert [p.name for p in rlds.shard_paths(TFDS_WRITTEN)] == [
        f"language_table-train.tfrecord-{i:05d}" for i in range(3)]
    assert rlds.count_episodes(TFDS_WRITTEN) == 5
    expected = json.loads((TFDS_WRITTEN / "expected.json").read_text())
    episodes = list(rlds.iter_episodes(TFDS_WRITTEN, drop_terminal=False))
    assert [e.episode_id for e in episodes] == [e["episode_id"] for e in expected]
    for got, want in zip(episodes, expected):
        assert len(got.steps) == len(want["steps"])
        for g, w in zip(got.steps, want["steps"]):
            np.testing.assert_array_equal(g.rgb, np.array(w["rgb"], np.uint8))
            for name in ("action", "effector_translation", "effector_target_translation"):
                np.testing.assert_array_equal(getattr(g, name), np.float32(w[name]))
            for name in ("reward", "is_first", "is_last", "is_terminal", "instruction"):
                assert getattr(g, name) == w[name], name
    # seeking by TFDS's shard lengths: episode 4 is the third shard's only episode
    assert [e.episode_id for e in rlds.iter_episodes(TFDS_WRITTEN, start=4)] == ["episode-4"]
