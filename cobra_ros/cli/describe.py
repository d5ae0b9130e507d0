"""cobra-describe: describe an image, or answer a question about it, from the command line."""

from __future__ import annotations

import argparse
import sys
import time

import cv2

import cobra_ros
from cobra_ros.model.checkpoint import CheckpointError
from cobra_ros.model.engine import DTYPES
from cobra_ros.model.scoring import SCORING_HELP, SCORINGS
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT
from cobra_ros.paths import default_model_path


def read_rgb(path: str):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cobra-describe: cannot read an image from {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", help="an image file (anything OpenCV reads)")
    parser.add_argument("--question", help="a free-form question (default: describe the image)")
    parser.add_argument(
        "--yes-no",
        dest="yes_no",
        help="a yes/no question (a statement with --scoring vsr), answered as P(yes)",
    )
    parser.add_argument(
        "--scoring",
        default="plain",
        choices=sorted(SCORINGS),
        help=SCORING_HELP + " (default: plain)",
    )
    parser.add_argument(
        "--model", default=None, help="model directory (default: the bundled model)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=sorted(DTYPES),
        help="weights and activations (default: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest answer, in tokens"
    )
    parser.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    args = parser.parse_args(argv)
    try:
        engine = cobra_ros.load(
            args.model or default_model_path(), device=args.device, dtype=args.dtype
        )
    except CheckpointError as err:
        raise SystemExit(f"cobra-describe: {err}")
    frame = engine.encode(read_rgb(args.image))
    if args.yes_no:
        t0 = time.perf_counter()
        p = engine.yes_no(frame, args.yes_no, scoring=args.scoring)
        ms = (time.perf_counter() - t0) * 1000
        positive, negative = (w.lower() for w in SCORINGS[args.scoring].answers)
        print(f"{positive if p >= 0.5 else negative} (P({positive}) = {p:.3f})")
        print(f"[encode {frame.encode_ms:.1f} ms, yes/no {ms:.1f} ms]", file=sys.stderr)
        return
    stream = (lambda piece, n: print(piece, end="", flush=True)) if args.stream else None
    answer = engine.ask(
        frame, args.question or DESCRIBE_PROMPT, args.max_new_tokens, on_token=stream
    )
    print("" if args.stream else answer.text)
    print(
        f"[encode {frame.encode_ms:.1f} ms, prefill {answer.prefill_ms:.1f} ms, "
        f"{answer.num_tokens} tokens in {answer.decode_ms:.1f} ms = "
        f"{answer.tokens_per_second:.1f} tok/s, {answer.finish_reason}]",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
