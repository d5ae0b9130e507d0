"""Fast DDS transport for camera-sized frames on one host.

Fast DDS's default shared-memory segment is 512 KB: a larger sample (a 640x360 rgb8 frame is
691 KB) goes over fragmented UDP instead, and a best-effort subscription (sensor-data QoS) then
loses about half of them at 30 Hz. A participant profile with a larger segment keeps such frames
in shared memory and loses none. The node counts what is lost either way (the `lost` count in its
diagnostics).

    FASTDDS_DEFAULT_PROFILES_FILE=<written profile> ros2 run cobra_ros cobra_node
    # or, from Python: use_large_frames()
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROFILES_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"

LARGE_FRAMES_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>cobra_shm</transport_id>
      <type>SHM</type>
      <segment_size>{segment_bytes}</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>cobra_udp</transport_id>
      <type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="cobra_large_frames" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>cobra_shm</transport_id>
        <transport_id>cobra_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def write_large_frames_profile(path: str | Path, segment_mb: int = 32) -> Path:
    path = Path(path)
    path.write_text(LARGE_FRAMES_PROFILE.format(segment_bytes=segment_mb * 2**20))
    return path


def use_large_frames(segment_mb: int = 32) -> str:
    """Make this process and the nodes it starts use the profile, unless one is chosen already."""
    if not os.environ.get(PROFILES_VARIABLE):
        fd, name = tempfile.mkstemp(prefix="cobra_fastdds_", suffix=".xml")
        os.close(fd)
        os.environ[PROFILES_VARIABLE] = str(write_large_frames_profile(name, segment_mb))
    return os.environ[PROFILES_VARIABLE]
