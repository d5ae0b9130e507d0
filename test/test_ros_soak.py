"""A short overload run: fast camera, many clients, cancelled goals; all answered, counts exact."""
import json
import os

from benchmarks.soak import main


def test_a_short_soak_answers_every_call_and_counts_every_frame(tiny_model_dir, tmp_path):
    out = tmp_path / "soak.json"
    # the soak picks a DDS domain and transport profile for itself and its node
    saved = dict(os.environ)
    try:
        status = main(
            [
                "--seconds",
                "8",
                "--clients",
                "6",
                "--camera-hz",
                "60",
                "--width",
                "160",
                "--height",
                "120",
                "--model",
                str(tiny_model_dir),
                "--max-rss-slope",
                "1000",
                "--json",
                str(out),
            ]
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    report = json.loads(out.read_text())
    assert status == 0, report
    assert report["node_alive_at_end"] and report["node_exit_status"] == 0
    assert report["unanswered"] == [] and report["calls"] == report["replies"]
    # every client kind called repeatedly; a fixed total would measure the machine's load
    assert min(report["calls"].values()) >= 2 and report["describe_goals_cancelled"] > 0
    frames = report["frames"]
    # 60 Hz outpaces the model, so some frames must be dropped (at 30 Hz a fast machine may drop
    # none); 120 Hz would starve the node instead
    assert report["frame_counts_exact"] and frames["dropped"] > 0
    unseen = report["frames_published_but_not_counted"]  # sent before the subscription matched
    assert (
        report["frames_published"] == frames["received"] + frames["lost"] + unseen and unseen >= 0
    )
