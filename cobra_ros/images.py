"""Camera frames to HxWx3 uint8 RGB: sensor_msgs Image and CompressedImage, without ROS.

The one decoder of the package: the node (through cobra_ros.ros.image_conversion, on rclpy
messages) and the bag reader (cobra_ros.langtable.bag, on rosbags messages) both call it, so a bag
is scored on the pixels the node sees. It reads any object with the message's fields.

ENCODINGS is the one table of what is accepted. The conversions are cv_bridge's, so a frame
decodes the same with or without a ROS install: mono16 values become round(v / 257) (cv_bridge's
convertTo with scale 255/65535), yuv422 is UYVY and yuv422_yuy2 is YUYV
(sensor_msgs/image_encodings.hpp). Generic OpenCV types (8UC3, 16UC1, 32FC1, ...) are refused, as
cv_bridge refuses them for rgb8: they say neither the channel order nor that the values are light
(16UC1 is usually depth in millimetres). 16-bit colour (rgb16, ...) is not accepted. rosbags-image
was considered and not used: it ignores `step` (padded rows come out sheared) and truncates 16-bit
values instead of rounding them.

Every malformed message raises ImageError with the reason, before any large allocation is made.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 4096 * 4096


class Encoding(NamedTuple):
    channels: int  # values per pixel in the message (2 for packed YUV 4:2:2)
    dtype: type  # numpy type of one value
    to_rgb: int | None  # OpenCV colour conversion to RGB, None when already RGB


ENCODINGS = {
    "rgb8": Encoding(3, np.uint8, None),
    "bgr8": Encoding(3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, np.uint8, cv2.COLOR_GRAY2RGB),
    "mono16": Encoding(1, np.uint16, cv2.COLOR_GRAY2RGB),
    "yuv422": Encoding(2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": Encoding(2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": Encoding(2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": Encoding(2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
}


class ImageError(ValueError):
    """An image message that cannot be turned into an RGB frame; the message says why."""


def check_size(width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}")


def raw_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/Image (fields encoding, width, height, step, is_bigendian, data) as RGB."""
    width, height, step, encoding = msg.width, msg.height, msg.step, msg.encoding
    check_size(width, height, max_pixels)
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, dtype, code = ENCODINGS[encoding]
    if channels == 2 and width % 2:
        raise ImageError(f"{encoding} packs two pixels in four bytes: width {width} is odd")
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than one row of {width} {encoding} pixels "
                         f"({row_bytes} bytes)")
    if len(msg.data) != step * height:
        raise ImageError(f"data has {len(msg.data)} bytes, but step x height = "
                         f"{step} x {height} = {step * height}")
    if itemsize > 1:
        dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    # A strided view over the message buffer: the row padding is skipped, nothing is copied yet.
    pixels = np.ndarray((height, width, channels), dtype=dtype, buffer=memoryview(msg.data),
                        strides=(step, channels * itemsize, itemsize))
    if itemsize > 1:
        # round(v / 257) maps 0..65535 onto 0..255 exactly at both ends, as cv_bridge does
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/CompressedImage (its fields: format, data) holding PNG or JPEG, as RGB."""
    # format is "jpeg"/"png" or "ORIG_PIXFMT; CODEC compressed [COMPRESSED_PIXFMT]" (sensor_msgs)
    if "compresseddepth" in msg.format.lower():
        raise ImageError(f"format {msg.format!r} is a compressed depth image, not a camera image")
    data = bytes(msg.data)
    if not data:
        raise ImageError("compressed image has no data")
    size = compressed_dimensions(data)
    if size is not None:
        check_size(*size, max_pixels)
    what = f"{len(data)} bytes of format {msg.format!r}"
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageError(f"cannot decode {what}: {err}") from err
    if bgr is None:
        raise ImageError(f"cannot decode {what}: corrupt, truncated or not PNG/JPEG")
    check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header: oversize frames are refused before decoding."""
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
