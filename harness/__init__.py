"""Run a cobra node in its own process and talk to it over DDS: for tests, examples and benchmarks.

Not part of the installed library (setup.py packages only cobra_ros, CMake installs only
cobra_ros/).
"""
