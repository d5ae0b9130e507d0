"""Image frames from ROS 2 bags (sqlite3 or MCAP) through `rosbags`, without a ROS install.

Reads sensor_msgs/msg/Image and sensor_msgs/msg/CompressedImage and decodes them with
cobra_ros.images, the node's own decoder, so a bag is scored on the pixels the node would see; a
small writer builds bags of synthetic frames for tests and demos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cobra_ros.images import ImageError, compressed_to_rgb, raw_to_rgb
from cobra_ros.langtable.rlds import encode_image

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
_STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}

_typestore = None


def typestore():
    global _typestore
    if _typestore is None:
        _typestore = get_typestore(Stores.LATEST)
    return _typestore


class BagFrame(NamedTuple):
    topic: str
    stamp_ns: int  # header stamp; the bag's receive time when the header stamp is zero
    frame_id: str
    rgb: np.ndarray  # HxWx3 uint8


def image_topics(path) -> dict:
    """{topic: message type} for every image topic in the bag."""
    with Reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)}


def iter_bag_images(path, topics: Iterable[str] | None = None) -> Iterator[BagFrame]:
    """Image messages in bag order as RGB, from `topics` (default: every image topic).

    A frame that cannot be decoded raises ImageError naming the topic and the bag's time.
    """
    wanted = set(topics) if topics is not None else None
    store = typestore()
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)
                       and (wanted is None or c.topic in wanted)]
        if wanted is not None and wanted - {c.topic for c in connections}:
            missing = sorted(wanted - {c.topic for c in connections})
            raise KeyError(f"{path}: no image topic(s) {missing}; "
                           f"image topics are {sorted(image_topics(path))}")
        if not connections:
            return
        for connection, log_time, raw in reader.messages(connections=connections):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            decode = compressed_to_rgb if connection.msgtype == COMPRESSED else raw_to_rgb
            try:
                rgb = decode(msg)
            except ImageError as err:
                raise ImageError(f"{path}: {connection.topic} at {log_time} ns: {err}") from err
            yield BagFrame(connection.topic, stamp or log_time, msg.header.frame_id, rgb)


def _header(stamp_ns: int, frame_id: str):
    types = typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000,
                                                nanosec=stamp_ns % 1_000_000_000)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8"):
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError("the writer stores rgb8 or bgr8")
    img = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    return typestore().types[IMAGE](header=_header(stamp_ns, frame_id), height=h, width=w,
                                    encoding=encoding, is_bigendian=0, step=w * 3,
                                    data=np.ascontiguousarray(img).reshape(-1))


def rgb_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg"):
    data = np.frombuffer(encode_image(rgb, fmt), np.uint8)
    return typestore().types[COMPRESSED](header=_header(stamp_ns, frame_id), format=fmt,
                                         data=data)


def write_image_bag(path, frames: Iterable, storage: str = "mcap",
                    compressed: dict | None = None, encoding: str = "rgb8") -> Path:
    """Write (topic, stamp_ns, frame_id, rgb) frames to a new bag directory.

    Topics named in `compressed` ({topic: "jpeg" | "png"}) become CompressedImage, others Image.
    """
    compressed = compressed or {}
    store = typestore()
    path = Path(path)
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=_STORAGE[storage]) as writer:
        connections = {}
        for topic, stamp_ns, frame_id, rgb in frames:
            msgtype = COMPRESSED if topic in compressed else IMAGE
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            if msgtype == COMPRESSED:
                msg = rgb_to_compressed_msg(rgb, stamp_ns, frame_id, compressed[topic])
            else:
                msg = rgb_to_image_msg(rgb, stamp_ns, frame_id, encoding)
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(msg, msgtype))
    return path
