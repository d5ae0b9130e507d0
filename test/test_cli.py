"""Command-line tools, run as a user would run them."""

import re
import subprocess
import sys

import cv2
import numpy as np


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, check=True
    )


def test_params_of_the_full_configuration():
    out = run("cobra_ros.cli.params", "--preset", "cobra-3b").stdout
    counts = {
        name: int(n.replace(",", "")) for name, n in re.findall(r"^\s+(\w+)\s+([\d,]+)", out, re.M)
    }
    assert 300e6 < counts["dino"] < 310e6
    assert 425e6 < counts["siglip"] < 432e6
    assert 2.75e9 < counts["llm"] < 2.79e9


def test_init_then_describe_and_yes_no(tmp_path):
    out = run(
        "cobra_ros.cli.init", "--preset", "micro", "--out", str(tmp_path / "m"), "--seed", "1"
    ).stdout
    assert "wrote micro" in out
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((30, 40, 3), 90, np.uint8))
    described = run(
        "cobra_ros.cli.describe",
        str(image),
        "--model",
        str(tmp_path / "m"),
        "--max-new-tokens",
        "4",
    )
    assert re.search(r"encode [\d.]+ ms, prefill [\d.]+ ms, \d+ tokens", described.stderr)
    yes_no = run(
        "cobra_ros.cli.describe",
        str(image),
        "--model",
        str(tmp_path / "m"),
        "--yes-no",
        "Is it red?",
    )
    assert re.match(r"(yes|no) \(P\(yes\) = 0\.\d{3}\)", yes_no.stdout)


def test_describe_reports_a_broken_model_dir_clearly(tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, "-m", "cobra_ros.cli.describe", str(image), "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "config.json: missing" in result.stderr


def test_describe_scoring_modes(tmp_path):
    import cobra_ros

    model = tmp_path / "m"
    run("cobra_ros.cli.init", "--preset", "micro", "--out", str(model), "--seed", "2")
    frame = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame[..., ::-1])
    engine = cobra_ros.load(model)
    state = engine.encode(frame)
    for scoring, word in (("pope", "yes"), ("vsr", "true")):
        out = run(
            "cobra_ros.cli.describe",
            str(image),
            "--model",
            str(model),
            "--yes-no",
            "A red block.",
            "--scoring",
            scoring,
        ).stdout
        got = re.match(rf"(\w+) \(P\({word}\) = (0\.\d{{3}})\)", out)
        assert got, out
        assert float(got.group(2)) == round(
            engine.yes_no(state, "A red block.", scoring=scoring), 3
        )
    help_text = run("cobra_ros.cli.eval", "--help").stdout
    assert "--scoring" in help_text and "pope" in help_text
