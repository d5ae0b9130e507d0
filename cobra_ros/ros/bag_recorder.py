"""Write the messages a node publishes to a ROS 2 bag (MCAP by default) with `rosbags`.

No rosbag2 install is needed: messages are serialized by rclpy (the CDR a subscriber receives),
and `rosbags` stores them with their definitions, ours (cobra_ros/msg) included, so any bag reader
(`ros2 bag`, Foxglove, cobra_ros.langtable.bag) can open the file.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

PACKAGE = "cobra_ros"
_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def message_type(msg) -> str:
    """'sensor_msgs/msg/Image' for an rclpy message object."""
    cls = type(msg)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def _interface_dirs() -> list:
    """Where our .msg files are: installed prefixes (share/cobra_ros/msg), then the source."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs = [Path(p) / "share" / PACKAGE / "msg" for p in [*prefixes, sys.prefix]]
    return [*dirs, Path(__file__).resolve().parents[2] / "msg"]


def typestore_with_our_messages():
    """The Kilted typestore plus every cobra_ros message definition found."""
    store = get_typestore(Stores.ROS2_KILTED)
    directory = next((d for d in _interface_dirs() if d.is_dir()), None)
    if directory is None:
        raise FileNotFoundError(f"no {PACKAGE}/msg definitions in {_interface_dirs()}")
    types = {}
    for path in sorted(directory.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class BagRecorder:
    """`recorder.write(topic, msg, stamp_ns)` from any thread; `close()` finishes the file."""

    def __init__(self, path, storage: str = "mcap"):
        if storage not in _STORAGE:
            raise ValueError(f"storage must be one of {', '.join(_STORAGE)}, not {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists: a bag is never overwritten")
        self._store = typestore_with_our_messages()
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST,
                              storage_plugin=_STORAGE[storage])
        self._writer.open()
        self._connections = {}
        self._lock = threading.Lock()
        self.count = 0

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        msgtype = message_type(msg)
        data = serialize_message(msg)
        with self._lock:
            if self._writer is None:
                raise RuntimeError(f"{self.path}: the bag is closed")
            key = (topic, msgtype)
            if key not in self._connections:
                self._connections[key] = self._writer.add_connection(topic, msgtype,
                                                                     typestore=self._store)
            self._writer.write(self._connections[key], int(stamp_ns), data)
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
