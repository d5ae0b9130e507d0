"""Where the bundled default model lives, in a source checkout and in an installed package."""
from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL = "langtable-tiny"


def default_model_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models" / BUNDLED_MODEL, here / "models" / BUNDLED_MODEL):
        if candidate.is_dir():
            return candidate
    try:  # installed by colcon: share/cobra_ros/models/
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("cobra_ros")) / "models" / BUNDLED_MODEL
    except Exception:
        return here.parent / "models" / BUNDLED_MODEL
