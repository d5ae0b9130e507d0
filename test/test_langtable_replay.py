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
        for name in ("episode_index", "step_index", "stamp", "instruction"):
            assert getattr(a, name) == getattr(b, name)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert b.truth is None

    # Seeking skips whole shards and keeps the source's episode numbering.
    window = list(iter_frames(tmp_path / "0.0.1", start_episode=3, max_episodes=1))
    assert {f.episode_index for f in window} == {3}
    assert [f.instruction for f in window] == [f.instruction for f in synthetic
                                               if f.episode_index == 3]
    assert len(list(iter_frames(source, start_episode=3, max_episodes=1))) == len(window)


def test_bag_frames_use_recorded_stamps(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    frames = [("/cam", 5_000_000_000 + k * 250_000_000, "cam", img + k) for k in range(3)]
    path = bag.write_image_bag(tmp_path / "b", frames + [("/other", 5_000_000_000, "x", img)],
                               storage="sqlite3")
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
    assert replay.main(["--source", "synthetic", "--episodes", "2", "--size", "96x54",
                        "--out-dir", str(out), "--export-rlds", str(shards)]) == 0
    lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(list(out.glob("*.png"))) > 2
    assert lines[0]["file"] == "ep00000_step0000.png" and lines[0]["truth"]["blocks"]
    assert sorted(p.name for p in shards.iterdir()) == ["dataset_info.json", "features.json",
                                                        "language_table-train.tfrecord-00000-of-00001"]
    assert replay.main(["--source", str(shards), "--max-episodes", "1",
                        "--out-dir", str(tmp_path / "again")]) == 0


def _sim_frames(**kwargs):
    source = replay.replace(replay.make_source("sim:BLOCK_4", seed=5, episodes=2, size=SMALL),
                            steps=25)
    return list(iter_frames(source, **kwargs))


def test_sim_source_replays_seeded_world_episodes_with_ground_truth():
    frames = _sim_frames()
    assert [(f.episode_index, f.step_index) for f in frames] == [(e, k) for e in range(2)
                                                                  for k in range(25)]
    assert all(f.stamp == pytest.approx(f.step_index / 10.0) for f in frames)
    assert all(f.rgb.shape == (54, 96, 3) for f in frames)
    # BLOCK_4: the set on the board, not the parked blocks
    assert [len(f.truth.blocks) for f in frames if f.step_index == 0] == [4, 4]
    # the scripted pusher does what the instruction says: the named block ends next to the other
    for episode in (0, 1):
        first, last = (f for f in frames if f.episode_index == episode and f.step_index in (0, 24))
        words = first.instruction.split()
        block = "_".join(words[2:4])
        goal = "_".join(words[-2:])
        distance = [np.hypot(f.truth.truth(block).x - f.truth.truth(goal).x,
                             f.truth.truth(block).y - f.truth.truth(goal).y)
                    for f in (first, last)]
        assert distance[1] < min(0.08, distance[0]), (first.instruction, distance)
    # seeded per episode: the second episode alone is the same as in the full run
    again = _sim_frames(start_episode=1, max_episodes=1)
    assert [f.instruction for f in again] == [f.instruction for f in frames[25:]]
    for a, b in zip(again[::8], frames[25::8]):
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_original_names_the_same_episodes_in_googles_simulator():
    source = replay.make_source("original:BLOCK_8", seed=3, episodes=2)
    assert source == replay.SimSource("BLOCK_8", 3, 2, source.size, original=True)
    assert replay.source_kind("original") == "sim"
    assert not replay.make_source("sim:BLOCK_8").original
    try:
        from cobra_ros.langtable.sim.original import import_original

        import_original()
    except ImportError:
        pytest.skip("Google's language_table package is not installed beside the project")
    frames = list(iter_frames(replay.replace(replay.make_source(
        "original:BLOCK_8", seed=5, episodes=1, size=SMALL), steps=3)))
    assert [f.step_index for f in frames] == [0, 1, 2]
    assert all(f.rgb.shape == (54, 96, 3) and len(f.truth.blocks) == 8 for f in frames)


@pytest.mark.parametrize("source, message", [
    ("sim:BLOCK_9", "block mode is one of BLOCK_4, BLOCK_8, N_CHOOSE_K"),
    ("original:BLOCK_2", "block mode is one of BLOCK_4, BLOCK_8, N_CHOOSE_K"),
    ("/no/such/dir", "no such file or directory"),
    ("{tmp}", "not an RLDS version dir"),
])
def test_a_bad_source_is_a_usage_error(tmp_path, capsys, source, message):
    with pytest.raises(SystemExit) as exit_:
        replay.main(["--source", source.format(tmp=tmp_path), "--out-dir", str(tmp_path / "f")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "error: --source: " in err and message in err
    assert not (tmp_path / "f").exists()


def test_cobra_eval_refuses_a_bad_source_before_loading_a_model(tmp_path, capsys):
    from cobra_ros.cli import eval as cobra_eval

    with pytest.raises(SystemExit) as exit_:
        cobra_eval.main(["--source", "sim:BLOCK_3", "--model", str(tmp_path / "no_model")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "--source: 'sim:BLOCK_3'" in err
