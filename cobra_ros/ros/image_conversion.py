"""sensor_msgs Image / CompressedImage <-> HxWx3 uint8 RGB numpy arrays.

cv_bridge is used when it can be imported (a ROS install); otherwise a small numpy/OpenCV conversion
covers rgb8, bgr8, rgba8, bgra8, mono8 and mono16 and honours `step` (row padding) and `is_bigendian`.
Every malformed message raises ImageError with the reason, before any large allocation is made.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

try:  # a ROS install has it; PyPI does not (its `cv-bridge` is the ROS 1 package)
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:
    CvBridge = None

DEFAULT_MAX_PIXELS = 4096 * 4096

# encoding -> (channels, numpy dtype of one channel)
ENCODINGS = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "mono16": (1, np.uint16),
}


class ImageError(ValueError):
    """An image message that cannot be turned into an RGB frame; the message says why."""


def to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An Image or CompressedImage message as an HxWx3 uint8 RGB array."""
    if isinstance(msg, CompressedImage):
        return _compressed_to_rgb(msg, max_pixels)
    if isinstance(msg, Image):
        return _raw_to_rgb(msg, max_pixels)
    raise ImageError(f"expected sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")


def to_image_msg(rgb: np.ndarray, header=None) -> Image:
    """An HxWx3 uint8 RGB array as an rgb8 Image with the given header."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                data=np.ascontiguousarray(rgb).tobytes())
    if header is not None:
        msg.header = header
    return msg


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}")


def _raw_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    width, height, step, encoding = msg.width, msg.height, msg.step, msg.encoding
    _check_size(width, height, max_pixels)
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, dtype = ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    if len(msg.data) != step * height:
        raise ImageError(f"data has {len(msg.data)} bytes, but step x height = {step} x {height} = {step * height}")
    if CvBridge is not None:
        return _cv_bridge_to_rgb(msg)
    if itemsize > 1:
        dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    # A strided view over the message buffer: the row padding is skipped, nothing is copied yet.
    pixels = np.ndarray((height, width, channels), dtype=dtype, buffer=memoryview(msg.data),
                        strides=(step, channels * itemsize, itemsize))
    return _pixels_to_rgb(pixels, encoding)


def _pixels_to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if encoding == "mono16":
        # round(v / 257) maps 0..65535 onto 0..255 exactly at both ends
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.repeat(pixels, 3, axis=2)


def _cv_bridge_to_rgb(msg: Image) -> np.ndarray:
    try:
        return np.ascontiguousarray(CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except CvBridgeError as err:
        raise ImageError(f"cv_bridge cannot convert {msg.encoding}: {err}") from err


def _compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    # format is "jpeg"/"png" or "ORIG_PIXFMT; CODEC compressed [COMPRESSED_PIXFMT]" (sensor_msgs docs)
    if "compresseddepth" in msg.format.lower():
        raise ImageError(f"format {msg.format!r} is a compressed depth image, not a camera image")
    data = bytes(msg.data)
    if not data:
        raise ImageError("compressed image has no data")
    size = compressed_dimensions(data)
    if size is not None:
        _check_size(*size, max_pixels)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageError(f"cannot decode {len(data)} bytes of format {msg.format!r}: {err}") from err
    if bgr is None:
        raise ImageError(f"cannot decode {len(data)} bytes of format {msg.format!r}: corrupt or truncated")
    _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, so oversize frames are refused before decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return (width, height) if height else None  # height 0: given later by a DNL marker
        i += 2 + length
    return None
