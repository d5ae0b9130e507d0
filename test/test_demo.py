"""The main job end to end: node, replay node and client processes; answers match the engine."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_answers_through_ros_agree_with_the_engine(tiny_model_dir):
    command = [sys.executable, "-m", "examples.demo", "--model", str(tiny_model_dir),
               "--episodes", "2", "--budget-s", "15", "--questions-per-frame", "2"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"yes/no accuracy [\d.]+ over \d+ questions", run.stdout)
    agreement = re.search(r"same yes/no ([\d.]+), max \|dP\(yes\)\| ([\d.e+-]+)", run.stdout)
    assert agreement and float(agreement.group(1)) == 1.0 and float(agreement.group(2)) < 1e-4
