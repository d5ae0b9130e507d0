import json

import numpy as np
import pytest

from cobra_ros.langtable import bag, replay
from cobra_ros.langtable.replay import SyntheticSource, iter_frames

SMALL = (96, 54)


def test_synthetic_frames_match_their_rlds_export(tmp_path):
    source = SyntheticSource(seed=4, episodes=5, size=SMALL)
    synthetic = list(iter_frames(source))
    assert [f.episode_index for f in synthetic] == sorted(f.episode_index for f in synthetic)
    assert {f.episode_index for f in synthetic} == set(range(5))
    for f in synthetic:
        assert f.stamp == pytest.approx(f.step_index / 10.0)  # the dataset's 10 Hz control rate
        assert f.rgb.shape == (54, 96, 3) and f.truth is not None and f.instruction

    replay.export_rlds(source, tmp_path / "0.0.1", episodes_per_shard=2)
    exported = list(iter_frames(tmp_path / "0.0.1"))
    assert len(exported) == len(synthetic)
    for a, b in zip(synthetic, exported):
        assert (a.episode_index, a.step_index, a.stamp, a.instruction) == (b.episode_index, b.step_index, b.stamp,
                                                                           b.instruction)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert b.truth is None

    # Seeking skips whole shards and keeps the source's episode numbering.
    window = list(iter_frames(tmp_path / "0.0.1", start_episode=3, max_episodes=1))
    assert {f.episode_index for f in window} == {3}
    assert [f.instruction for f in window] == [f.instruction for f in synthetic if f.episode_index == 3]
    assert len(list(iter_frames(source, start_episode=3, max_episodes=1))) == len(window)


def test_bag_frames_use_recorded_stamps(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    frames = [("/cam", 5_000_000_000 + k * 250_000_000, "cam", img + k) for k in range(3)]
    path = bag.write_image_bag(tmp_path / "b", frames + [("/other", 5_000_000_000, "x", img)], storage="sqlite3")
    with pytest.raises(ValueError, match="/cam"):
        list(iter_frames(path))
    got = list(iter_frames(path, topic="/cam"))
    assert [f.stamp for f in got] == [0.0, 0.25, 0.5]
    assert [int(f.rgb[0, 0, 0]) for f in got] == [0, 1, 2]
    assert all(f.instruction is None and f.truth is None for f in got)
    (db3,) = path.glob("*.db3")  # the storage file alone is a source too
    assert len(list(iter_frames(db3, topic="/cam"))) == 3


def test_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="not an RLDS"):
        replay.source_kind(tmp_path)


def test_cli_writes_pngs_and_shards(tmp_path, capsys):
    out, shards = tmp_path / "frames", tmp_path / "rlds"
    assert replay.main(["--source", "synthetic", "--episodes", "2", "--size", "96x54", "--out-dir", str(out),
                        "--export-rlds", str(shards)]) == 0
    lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(list(out.glob("*.png"))) > 2
    assert lines[0]["file"] == "ep00000_step0000.png" and lines[0]["truth"]["blocks"]
    assert sorted(p.name for p in shards.iterdir()) == ["dataset_info.json", "features.json",
                                                        "language_table-train.tfrecord-00000-of-00001"]
    assert replay.main(["--source", str(shards), "--max-episodes", "1", "--out-dir", str(tmp_path / "again")]) == 0
