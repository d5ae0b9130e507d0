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


def test_compare_batching_switches_the_parameter_on_one_node_and_reports_ratios(
    tiny_model_dir, tmp_path
):
    out = tmp_path / "compare.json"
    saved = dict(os.environ)
    try:
        status = main(["--seconds", "4", "--clients", "6", "--camera-hz", "30", "--width", "160",
                       "--height", "120", "--model", str(tiny_model_dir), "--max-rss-slope",
                       "1000", "--compare-batching", "--json", str(out)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    report = json.loads(out.read_text())
    assert status == 0, report
    off, on = report["runs"]
    assert (off["batch_yes_no"], on["batch_yes_no"]) == (False, True)
    assert off["yes_no_batches"] == off["yes_no_batched"] == 0  # the parameter took effect
    assert on["yes_no_batched"] >= 2 * on["yes_no_batches"]  # a batch is 2 jobs or more
    for run in (off, on):
        assert run["unanswered"] == [] and run["calls"] == run["replies"]
    comparison = report["comparison"]
    assert set(comparison) == {"batch_yes_no false", "batch_yes_no true", "ratio true / false"}
    answered = comparison["ratio true / false"]["all answered/s"]
    assert answered == comparison["batch_yes_no true"]["all answered/s"] / comparison[
        "batch_yes_no false"]["all answered/s"]
