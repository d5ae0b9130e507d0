"""Plain pip install (no ROS build): the Python package, console scripts and ament share files.

The ROS 2 interfaces (cobra_ros.msg/srv/action) are generated only by the CMake build
(colcon, or `make venv` here); metadata and console_scripts are in setup.cfg.
"""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cobra_ros"
SHARE = "share/" + PACKAGE


def tree(top):
    """data_files entries for every file under `top`, keeping the layout (bundled models)."""
    return [
        (os.path.join(SHARE, root), [os.path.join(root, f) for f in files])
        for root, _, files in os.walk(top)
        if files
    ]


setup(
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        (SHARE, ["package.xml"]),
        (SHARE + "/launch", glob("launch/*.launch.py")),
        (SHARE + "/config", glob("config/*.yaml")),
    ]
    + tree("models"),
)
