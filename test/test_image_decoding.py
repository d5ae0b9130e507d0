"""The bag reader and the node decode every supported encoding alike, and refuse the same ones.

Every case is one topic of a real MCAP bag written with rosbags. The bag reader decodes it
(cobra_ros.langtable.bag); the node's path decodes the same CDR bytes the way DDS hands them to
the node (rclpy deserialize_message -> image_conversion.to_rgb). Both must give the same array,
and that array must match a reference computed here from the pixel values (BT.601 for YUV,
round(v / 257) for mono16); where cv_bridge can be imported (a ROS install), it must agree too.
"""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CompressedImage, Image

from cobra_ros.images import ENCODINGS, ImageError
from cobra_ros.langtable import bag
from cobra_ros.langtable.rlds import encode_image
from cobra_ros.ros.image_conversion import to_rgb

H, W, PAD = 6, 8, 5  # an even width (YUV 4:2:2 packs pixel pairs) and padded rows
RNG = np.random.default_rng(16)
RGB8 = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
ALPHA8 = np.full((H, W, 1), 77, np.uint8)
SMOOTH = np.zeros((H, W, 3), np.uint8)  # a JPEG of it stays within a few levels
SMOOTH[..., 0] = 200
SMOOTH[..., 1] = np.linspace(30, 90, W)
SMOOTH[..., 2] = np.linspace(60, 20, H)[:, None]


def to8(values16):
    return np.rint(values16 / 257.0).astype(np.uint8)


def grey(values):
    return np.repeat(values[:, :, :1], 3, axis=2)


def yuv_pairs():
    """Packed 4:2:2 samples (Y per pixel, U and V per pixel pair) and their BT.601 RGB."""
    y = RNG.integers(16, 236, (H, W)).astype(np.uint8)
    u = RNG.integers(16, 241, (H, W // 2)).astype(np.uint8)
    v = RNG.integers(16, 241, (H, W // 2)).astype(np.uint8)
    yf = 1.164 * (y.astype(float) - 16)
    uf, vf = (np.repeat(c.astype(float) - 128, 2, axis=1) for c in (u, v))
    rgb = np.dstack([yf + 1.596 * vf, yf - 0.813 * vf - 0.391 * uf, yf + 2.018 * uf])
    return y, u, v, np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


Y, U, V, YUV_RGB = yuv_pairs()
UYVY = np.stack([U, Y[:, 0::2], V, Y[:, 1::2]], axis=2).reshape(H, W, 2)
YUYV = np.stack([Y[:, 0::2], U, Y[:, 1::2], V], axis=2).reshape(H, W, 2)

# encoding -> (values as the message carries them, the RGB a correct decoder gives, tolerance)
SUPPORTED = {
    "rgb8": (RGB8, RGB8, 0),
    "bgr8": (RGB8[:, :, ::-1], RGB8, 0),
    "rgba8": (np.dstack([RGB8, ALPHA8]), RGB8, 0),
    "bgra8": (np.dstack([RGB8[:, :, ::-1], ALPHA8]), RGB8, 0),
    "mono8": (RGB8[:, :, :1], grey(RGB8), 0),
    "mono16": (RGB16[:, :, :1], grey(to8(RGB16)), 0),
    "yuv422": (UYVY, YUV_RGB, 2),
    "uyvy": (UYVY, YUV_RGB, 2),
    "yuv422_yuy2": (YUYV, YUV_RGB, 2),
    "yuyv": (YUYV, YUV_RGB, 2),
}
# topic -> (encoding, pixels, big-endian?) of frames both decoders must refuse, and why
REFUSED = {
    "8UC3": ("8UC3", RGB8, False, "unsupported encoding '8UC3'"),
    "8UC1": ("8UC1", RGB8[:, :, :1], False, "unsupported encoding '8UC1'"),
    "16UC1": ("16UC1", RGB16[:, :, :1], False, "unsupported encoding '16UC1'"),
    "32FC1": ("32FC1", RGB16[:, :, :2], False, "unsupported encoding '32FC1'"),
    "bayer": ("bayer_rggb8", RGB8[:, :, :1], False, "unsupported encoding 'bayer_rggb8'"),
    "rgb16": ("rgb16", RGB16, True, "unsupported encoding 'rgb16'"),
    "upper_case": ("RGB8", RGB8, False, "unsupported encoding 'RGB8'"),
    "odd_width_yuv": ("uyvy", UYVY[:, :-1], False, "width 7 is odd"),
}


def test_the_table_is_what_this_test_covers():
    assert set(SUPPORTED) == set(ENCODINGS)


def raw_fields(pixels: np.ndarray, encoding: str, bigendian: bool = False) -> dict:
    h, w = pixels.shape[:2]
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((h, PAD), 0xAB, np.uint8)], axis=1)
    return dict(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                step=padded.shape[1], data=padded.reshape(-1))


def _cases():
    """topic -> (fields of a raw Image, or (format, bytes) of a CompressedImage)."""
    cases = {}
    for encoding, (pixels, _, _) in SUPPORTED.items():
        for bigendian in ((False, True) if pixels.dtype.itemsize > 1 else (False,)):
            topic = f"/{encoding}/{'be' if bigendian else 'le'}"
            cases[topic] = raw_fields(pixels, encoding, bigendian)
    for name, (encoding, pixels, bigendian, _) in REFUSED.items():
        cases[f"/refused/{name}"] = raw_fields(pixels, encoding, bigendian)
    short = raw_fields(RGB8, "rgb8")
    short["step"] = W * 3 - 1
    short["data"] = short["data"][: short["step"] * H]
    cases["/refused/step"] = short
    png = encode_image(RGB8, "png")
    cases["/compressed/png"] = ("rgb8; png compressed bgr8", png)
    cases["/compressed/jpeg"] = ("jpeg", encode_image(SMOOTH, "jpeg"))
    cases["/refused/truncated_png"] = ("png", png[: len(png) // 2])
    cases["/refused/depth"] = ("16UC1; compressedDepth png", png)
    return cases


CASES = _cases()
REASONS = {f"/refused/{name}": reason for name, (*_, reason) in REFUSED.items()}
REASONS.update({"/refused/step": "smaller than one row", "/refused/truncated_png": "cannot decode",
                "/refused/depth": "compressed depth image"})


@pytest.fixture(scope="module")
def image_bag(tmp_path_factory):
    """A bag with one frame per case; {topic: the CDR bytes stored for it}."""
    store = bag.typestore()
    types = store.types
    path = tmp_path_factory.mktemp("decoding") / "cases"
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        for k, (topic, case) in enumerate(CASES.items()):
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=k), frame_id="camera")
            if isinstance(case, dict):
                msgtype, msg = bag.IMAGE, types[bag.IMAGE](header=header, **case)
            else:
                data = np.frombuffer(case[1], np.uint8)
                msgtype, msg = bag.COMPRESSED, types[bag.COMPRESSED](header=header, format=case[0],
                                                                     data=data)
            connection = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connection, 1_000 + k, store.serialize_cdr(msg, msgtype))
    with Reader(path) as reader:
        stored = {c.topic: raw for c, _, raw in reader.messages()}
    return path, stored


def node_decode(image_bag, topic):
    """What the node does with the frame: the CDR bytes as an rclpy message, then to_rgb."""
    raw = image_bag[1][topic]
    msgtype = Image if isinstance(CASES[topic], dict) else CompressedImage
    return to_rgb(deserialize_message(raw, msgtype))


def bag_decode(image_bag, topic):
    (frame,) = bag.iter_bag_images(image_bag[0], [topic])
    return frame.rgb


@pytest.mark.parametrize("topic", [t for t in CASES if not t.startswith("/refused/")])
def test_bag_reader_and_node_decode_alike_and_right(image_bag, topic):
    from_node, from_bag = node_decode(image_bag, topic), bag_decode(image_bag, topic)
    assert from_node.dtype == np.uint8 and from_node.shape == (H, W, 3)
    np.testing.assert_array_equal(from_bag, from_node)
    encoding = topic.split("/")[1]
    if encoding == "compressed":
        if topic.endswith("png"):  # lossless
            np.testing.assert_array_equal(from_node, RGB8)
        else:  # lossy, but the channel order is kept
            assert np.abs(from_node.astype(int) - SMOOTH).max() <= 8
        return
    _, want, tolerance = SUPPORTED[encoding]
    assert np.abs(from_node.astype(int) - want).max() <= tolerance


@pytest.mark.parametrize("topic", [t for t in CASES if t.startswith("/refused/")])
def test_bag_reader_and_node_refuse_alike(image_bag, topic):
    with pytest.raises(ImageError, match=REASONS[topic]) as by_node:
        node_decode(image_bag, topic)
    with pytest.raises(ImageError) as by_bag:
        bag_decode(image_bag, topic)
    # the bag's message is the decoder's own reason, prefixed with where in the bag it was
    assert str(by_bag.value).endswith(f"{topic} at {1_000 + list(CASES).index(topic)} ns: "
                                      f"{by_node.value}")


@pytest.mark.parametrize("topic", [t for t in CASES if isinstance(CASES[t], dict)
                                   and not t.startswith("/refused/")])
def test_cv_bridge_agrees_where_it_is_installed(image_bag, topic):
    cv_bridge = pytest.importorskip("cv_bridge")
    msg = deserialize_message(image_bag[1][topic], Image)
    theirs = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    np.testing.assert_array_equal(to_rgb(msg), theirs)
