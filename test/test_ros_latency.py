"""benchmarks/ros_latency.py: the ROS layer's own cost around the model, against its encode."""
import json

from benchmarks.ros_latency import main


def test_reports_every_step_with_its_ratio_to_encode(tiny_model_dir, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "latency.json"
    try:
        assert main(["--threads", "1", "--model", str(tiny_model_dir), "--width", "64",
                     "--height", "48", "--repeat", "5", "--encode-repeat", "2",
                     "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())["figures"]
    steps = {"image_in", "image_in.deserialize", "image_in.to_rgb", "compressed_in (jpeg)",
             "answer_out", "ask_response_out", "annotated_out", "model_encode"}
    assert set(figures) == steps
    for name, figure in figures.items():
        assert 0 <= figure["p50"] <= figure["p99"] and name in printed
        encode = figures["model_encode"]["p50"]
        assert abs(figure["ratio_to_encode"] - figure["p50"] / encode) < 1e-9
    assert "64x48 rgb8" in printed and "of the model's encode" in printed
    assert "torch threads 1" in printed
