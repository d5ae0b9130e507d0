"""What the ROS layer adds to the model's own time, for one camera frame (`make latency`).

Times, on this machine and in this process, the node's work around the model for a WxH rgb8 frame:
  image in     the CDR bytes of a sensor_msgs/Image as DDS delivers them -> message (rclpy) -> RGB
               (and of a JPEG sensor_msgs/CompressedImage, for transport:=compressed)
  answer out   an Answer -> SceneDescription -> CDR bytes (what publishing serializes); and the Ask
               response
  annotated    drawing the text on the frame -> Image -> CDR bytes (only with publish_annotated)
and the model's encode of the same frame, so each figure can be read as a fraction of it. The DDS
transport itself (shared memory or UDP on loopback) is the middleware's and is not included.

    python -m benchmarks.ros_latency       # the bundled model, or a random tiny one without it
    python -m benchmarks.ros_latency --model DIR --device cuda --repeat 500 --json out.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cobra_ros.model.engine import DTYPES
from cobra_ros.stats import percentiles


def time_it(fn, repeat: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def load_engine(model: str | None, device: str, dtype: str | None):
    """(engine, description of where it came from)."""
    import cobra_ros
    from cobra_ros.paths import default_model_path

    if model:
        return cobra_ros.load(model, device=device, dtype=dtype), model
    bundled = default_model_path()
    if (bundled / "config.json").is_file():
        return cobra_ros.load(bundled, device=device, dtype=dtype), str(bundled)
    from cobra_ros.cli.init import init_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="cobra_latency_")) / "tiny"
    init_model_dir("tiny", str(tmp), seed=0)
    return cobra_ros.load(
        tmp, device=device, dtype=dtype
    ), f"random tiny model ({bundled} not found)"


def measure(engine, width: int, height: int, repeat: int, encode_repeat: int) -> dict:
    import cv2
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from cobra_ros.msg import SceneDescription
    from cobra_ros.ros.annotate import annotate
    from cobra_ros.ros.image_conversion import to_image_msg, to_rgb
    from cobra_ros.srv import Ask

    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    header = Header(frame_id="camera_optical_frame")
    wire = serialize_message(to_image_msg(rgb, header))
    assert np.array_equal(to_rgb(deserialize_message(wire, Image)), rgb)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    compressed_wire = serialize_message(
        CompressedImage(header=header, format="rgb8; jpeg compressed bgr8", data=jpeg))

    state = engine.encode(rgb)
    answer = engine.ask(state, "Describe the image specifically.", max_new_tokens=32)

    def image_in():
        return to_rgb(deserialize_message(wire, Image))

    def answer_out():
        msg = SceneDescription(header=header, text=answer.text, is_final=True,
                               prompt="Describe the image specifically.",
                               num_tokens=answer.num_tokens, encode_ms=state.encode_ms,
                               prefill_ms=answer.prefill_ms, decode_ms=answer.decode_ms,
                               tokens_per_second=answer.tokens_per_second, model=engine.name)
        return serialize_message(msg)

    def ask_response_out():
        response = Ask.Response(success=True, answer=answer.text, image_stamp=header.stamp,
                                latency_ms=1.0)
        return serialize_message(response)

    def annotated_out():
        return serialize_message(to_image_msg(annotate(rgb, answer.text), header))

    message = deserialize_message(wire, Image)
    figures = {
        "image_in": percentiles(time_it(image_in, repeat)),
        "image_in.deserialize": percentiles(
            time_it(lambda: deserialize_message(wire, Image), repeat)
        ),
        "image_in.to_rgb": percentiles(time_it(lambda: to_rgb(message), repeat)),
        "compressed_in (jpeg)": percentiles(
            time_it(
                lambda: to_rgb(deserialize_message(compressed_wire, CompressedImage)),
                max(10, repeat // 4),
            )
        ),
        "answer_out": percentiles(time_it(answer_out, repeat)),
        "ask_response_out": percentiles(time_it(ask_response_out, repeat)),
        "annotated_out": percentiles(time_it(annotated_out, max(10, repeat // 4))),
        "model_encode": percentiles(time_it(lambda: engine.encode(rgb), encode_repeat, warmup=2)),
    }
    encode = figures["model_encode"]["p50"]
    for name, figure in figures.items():
        figure["ratio_to_encode"] = figure["p50"] / encode if encode > 0 else float("nan")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="model directory (default: the bundled model, else a random tiny one)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="model dtype (default: the model's own)")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs of each ROS-side step")
    parser.add_argument(
        "--encode-repeat", type=int, default=20, help="timed runs of the model's encode"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)"
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    engine, origin = load_engine(args.model, args.device, args.dtype)
    figures = measure(engine, args.width, args.height, args.repeat, args.encode_repeat)
    print(f"ros latency: {args.width}x{args.height} rgb8, model {engine.name} ({origin}) "
          f"on {engine.device}, torch threads {torch.get_num_threads()}")
    print(f"  {'step':<24} {'p50 ms':>10} {'p99 ms':>10} {'x encode':>10}")
    for name, f in figures.items():
        print(f"  {name:<24} {f['p50']:>10.3f} {f['p99']:>10.3f} {f['ratio_to_encode']:>10.4f}")
    added = figures["image_in"]["p50"] + figures["answer_out"]["p50"]
    print(f"  ROS layer per description (image in + answer out): {added:.3f} ms p50 = "
          f"{added / figures['model_encode']['p50']:.2%} of the model's encode")
    if args.json:
        report = {"width": args.width, "height": args.height, "model": origin,
                  "device": str(engine.device), "figures": figures}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
