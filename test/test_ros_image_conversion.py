"""Image message <-> RGB array conversion: encodings, row padding, endianness, malformed input.

test_image_decoding.py checks every encoding of the table against a reference, through the node's
path and the bag reader's; this file checks the node's side in depth.
"""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cobra_ros import images
from cobra_ros.ros import image_conversion
from cobra_ros.ros.image_conversion import ImageError, compressed_dimensions, to_image_msg, to_rgb


def frame(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Image message of `pixels` (HxWxC, any dtype) with `pad` garbage bytes after every row."""
    h, w = pixels.shape[:2]
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = pixels.reshape(h, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                 step=padded.shape[1], data=padded.tobytes())


RGB_FORMS = {
    "rgb8": lambda rgb: rgb,
    "bgr8": lambda rgb: rgb[:, :, ::-1],
    "rgba8": lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)]),
    "bgra8": lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 77, np.uint8)]),
}


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", sorted(RGB_FORMS))
def test_colour_encodings_round_trip(encoding, pad):
    rgb = frame()
    out = to_rgb(raw_msg(RGB_FORMS[encoding](rgb), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_becomes_grey_rgb(pad):
    grey = frame()[:, :, :1]
    out = to_rgb(raw_msg(grey, "mono8", pad))
    np.testing.assert_array_equal(out, np.repeat(grey, 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 2, 6])
def test_mono16_honours_endianness_and_padding(bigendian, pad):
    values = np.array([[0, 1, 128, 129, 257], [385, 65535, 65407, 4096, 0x1234]], np.uint16)
    values = values[:, :, None]
    out = to_rgb(raw_msg(values, "mono16", pad, bigendian))
    expected = np.rint(values[:, :, 0] / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_mono16_with_the_wrong_endianness_flag_reads_differently():
    values = np.full((2, 3, 1), 0x0100, np.uint16)  # 256 -> 1; byte-swapped it is 1 -> 0
    msg = raw_msg(values, "mono16", bigendian=True)
    assert to_rgb(msg)[0, 0, 0] == 1
    msg.is_bigendian = 0
    assert to_rgb(msg)[0, 0, 0] == 0


def test_output_does_not_alias_padding_or_other_rows():
    rgb = frame(h=3, w=4)
    out = to_rgb(raw_msg(rgb, "rgb8", pad=9))
    assert out.flags.c_contiguous and out.shape == (3, 4, 3)


def test_to_image_msg_round_trip_keeps_header():
    rgb = frame(h=6, w=9)
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = to_image_msg(rgb, header)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 9, 6, 27)
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(to_rgb(msg), rgb)
    with pytest.raises(ImageError):
        to_image_msg(rgb[:, :, 0])


# --- compressed ----------------------------------------------------------------------------------

def compressed(rgb, ext=".png", fmt="rgb8; png compressed bgr8"):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format=fmt, data=buf.tobytes())


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8",
                                 ""])
def test_png_is_lossless(fmt):
    rgb = frame(h=16, w=20)
    np.testing.assert_array_equal(to_rgb(compressed(rgb, ".png", fmt)), rgb)


def test_jpeg_decodes_to_rgb_not_bgr():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 250  # pure red survives JPEG as mostly red
    out = to_rgb(compressed(rgb, ".jpg", "rgb8; jpeg compressed bgr8"))
    assert out.shape == (32, 32, 3)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_compressed_dimensions_read_from_headers():
    rgb = frame(h=21, w=34)
    for ext in (".png", ".jpg"):
        assert compressed_dimensions(bytes(compressed(rgb, ext).data)) == (34, 21)
    assert compressed_dimensions(b"random bytes") is None


# --- malformed input: one exception type, a reason that names the problem ------------------------

def _bad_raw_cases():
    good = raw_msg(frame(), "rgb8")
    cases = {}

    def case(name, reason, **changes):
        msg = raw_msg(frame(), "rgb8")
        for key, value in changes.items():
            setattr(msg, key, value)
        cases[name] = (msg, reason)

    case("data shorter than step*height", "data has", data=bytes(good.data)[:-1])
    case("data longer than step*height", "data has", data=bytes(good.data) + b"\0")
    case("zero width", "empty image", width=0)
    case("zero height", "empty image", height=0, data=b"")
    case("step smaller than a row", "smaller than one row", step=good.step - 1)
    case("misspelled encoding", "unsupported encoding 'RGB8'", encoding="RGB8")
    case("generic OpenCV type", "unsupported encoding '8UC3'", encoding="8UC3")
    case("empty encoding", "unsupported encoding ''", encoding="")
    case("8000x8000 claimed", "over the limit", width=8000, height=8000, step=24000)
    return cases


@pytest.mark.parametrize("name", sorted(_bad_raw_cases()))
def test_malformed_raw_images_are_refused_with_a_reason(name):
    msg, reason = _bad_raw_cases()[name]
    with pytest.raises(ImageError, match=reason):
        to_rgb(msg)


def test_a_real_8000x8000_frame_is_refused_and_the_limit_is_adjustable():
    msg = Image(height=8000, width=8000, encoding="mono8", step=8000, data=bytes(8000 * 8000))
    with pytest.raises(ImageError, match="64000000 pixels, over the limit of 16777216"):
        to_rgb(msg)
    assert to_rgb(raw_msg(frame(h=4, w=4), "rgb8"), max_pixels=16).shape == (4, 4, 3)
    with pytest.raises(ImageError, match="over the limit of 15"):
        to_rgb(raw_msg(frame(h=4, w=4), "rgb8"), max_pixels=15)


def test_oversize_compressed_frames_are_refused_before_decoding(monkeypatch):
    big = np.zeros((8000, 8000), np.uint8)
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, big)
        msg = CompressedImage(format=ext[1:], data=buf.tobytes())
        monkeypatch.setattr(images.cv2, "imdecode",
                            lambda *a: pytest.fail("decoded an oversize frame"))
        with pytest.raises(ImageError, match="8000x8000 .* over the limit"):
            to_rgb(msg)
        monkeypatch.undo()


@pytest.mark.parametrize("name", ["corrupt", "truncated", "random", "empty", "depth"])
def test_malformed_compressed_images_are_refused(name):
    png = bytes(compressed(frame(h=40, w=40)).data)
    data, fmt, reason = {
        "corrupt": (png[:40] + bytes(64) + png[104:], "png", "cannot decode"),
        "truncated": (png[: len(png) // 3], "png", "cannot decode"),
        "random": (np.random.default_rng(1).bytes(5000), "jpeg", "cannot decode"),
        "empty": (b"", "jpeg", "no data"),
        "depth": (png, "16UC1; compressedDepth png", "depth"),
    }[name]
    with pytest.raises(ImageError, match=reason):
        to_rgb(CompressedImage(format=fmt, data=data))


def test_not_an_image_message():
    with pytest.raises(ImageError, match="expected sensor_msgs/Image"):
        to_rgb(Header())


# --- fuzzing: whatever arrives, the result is a valid frame or an ImageError ---------------------

def _check_outcome(msg, outcomes):
    try:
        out = to_rgb(msg, max_pixels=1 << 20)
    except ImageError:
        outcomes["refused"] += 1
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert 0 < out.shape[0] * out.shape[1] <= 1 << 20
    outcomes["converted"] += 1


def test_fuzzed_raw_messages_convert_or_are_refused():
    rng = np.random.default_rng(2024)
    encodings = list(image_conversion.ENCODINGS) + ["RGB8", "8UC3", "16UC1", "", "rgb16", "bgr8 "]
    outcomes = {"converted": 0, "refused": 0}
    for _ in range(3000):
        h, w = (int(v) for v in rng.integers(-2, 40, 2))
        encoding = encodings[rng.integers(len(encodings))]
        channels, dtype, _ = image_conversion.ENCODINGS.get(encoding, (3, np.uint8, None))
        row = max(w, 0) * channels * np.dtype(dtype).itemsize
        step = int(max(0, row + rng.integers(-3, 8)))
        off_by = rng.choice([0, 0, 0, -1, 1, int(rng.integers(-50, 50))])
        size = int(max(0, step * max(h, 0) + off_by))
        msg = Image(height=max(h, 0), width=max(w, 0), encoding=encoding, step=step,
                    is_bigendian=int(rng.integers(2)), data=rng.bytes(size))
        _check_outcome(msg, outcomes)
    assert outcomes["converted"] > 300 and outcomes["refused"] > 300, outcomes


def test_fuzzed_compressed_bytes_decode_or_are_refused():
    rng = np.random.default_rng(7)
    seeds = [bytes(compressed(frame(h=24, w=32, seed=s), ext).data)
             for s in range(3) for ext in (".png", ".jpg")]
    outcomes = {"converted": 0, "refused": 0}
    for i in range(600):
        data = bytearray(seeds[i % len(seeds)])
        mutation = i % 3
        if mutation == 0:  # flip bytes
            for position in rng.integers(0, len(data), int(rng.integers(1, 20))):
                data[position] = int(rng.integers(256))
        elif mutation == 1:  # truncate
            data = data[: int(rng.integers(0, len(data)))]
        else:  # splice random bytes into the middle
            cut = int(rng.integers(0, len(data)))
            data = data[:cut] + rng.bytes(int(rng.integers(1, 200))) + data[cut:]
        _check_outcome(CompressedImage(format="jpeg", data=bytes(data)), outcomes)
    assert outcomes["refused"] > 100 and outcomes["converted"] > 50, outcomes
