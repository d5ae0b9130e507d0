"""sensor_msgs Image / CompressedImage (rclpy) <-> HxWx3 uint8 RGB arrays, for the node.

Decoding is cobra_ros.images (shared with the bag reader); this module only tells the two rclpy
message types apart and builds the rgb8 messages the node and the replay node publish.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from cobra_ros.images import (
    DEFAULT_MAX_PIXELS,
    ENCODINGS,
    ImageError,
    compressed_dimensions,
    compressed_to_rgb,
    raw_to_rgb,
)

__all__ = ["DEFAULT_MAX_PIXELS", "ENCODINGS", "ImageError", "compressed_dimensions",
           "to_image_msg", "to_rgb"]


def to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An Image or CompressedImage message as an HxWx3 uint8 RGB array."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, max_pixels)
    if isinstance(msg, Image):
        return raw_to_rgb(msg, max_pixels)
    raise ImageError(f"expected sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")


def to_image_msg(rgb: np.ndarray, header=None) -> Image:
    """An HxWx3 uint8 RGB array as an rgb8 Image with the given header."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(
            f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                data=np.ascontiguousarray(rgb).tobytes())
    if header is not None:
        msg.header = header
    return msg
