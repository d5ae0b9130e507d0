"""A model directory whose checkpoint carries a pickled object that runs a shell command.

For the security tests: loading it must be refused (torch.load(weights_only=True)) and the command
must never run. Test-only, so it lives here and not in the installed package.
"""
import os
import shutil
from pathlib import Path

import torch

from cobra_ros.model.checkpoint import CHECKPOINT


class _RunsCode:
    """Unpickling this runs `touch <marker>`: what a checkpoint with a pickled object could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickled_model_copy(model_dir, out_dir, marker) -> Path:
    """A copy of `model_dir` whose checkpoint also holds a pickle that would create `marker`."""
    shutil.copytree(model_dir, out_dir)
    checkpoint = Path(out_dir) / CHECKPOINT
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data["exploit"] = _RunsCode(marker)
    torch.save(data, checkpoint)
    return Path(out_dir)
