"""Plain pip install (no ROS build): the Python package, its console scripts and the ament share files.

The ROS 2 interfaces (cobra_ros.msg/srv/action) are generated only by the CMake build
(colcon, or `make venv` here); metadata and console_scripts are in setup.cfg.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cobra_ros"

setup(
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
)
