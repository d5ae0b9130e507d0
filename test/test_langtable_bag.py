"""ROS 2 bags of image frames: written and read back through rosbags, sqlite3 and MCAP.

How each encoding decodes (the same as in the node) is test_image_decoding.py's subject.
"""
import numpy as np
import pytest

from cobra_ros.langtable import bag


def _frames():
    rng = np.random.default_rng(0)
    for k in range(3):
        img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        stamp = 1_000_000_000 + k * 100_000_000
        yield "/camera/image_raw", stamp, "camera", img
        yield "/camera/image_raw/compressed", stamp + 5, "camera_optical", img


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_bag_round_trip(tmp_path, storage, encoding):
    frames = list(_frames())
    path = bag.write_image_bag(tmp_path / "frames", frames, storage=storage, encoding=encoding,
                               compressed={"/camera/image_raw/compressed": "png"})
    assert bag.image_topics(path) == {"/camera/image_raw": bag.IMAGE,
                                      "/camera/image_raw/compressed": bag.COMPRESSED}
    got = list(bag.iter_bag_images(path))
    assert len(got) == len(frames)
    by_key = {(f.topic, f.stamp_ns): f for f in got}
    for topic, stamp, frame_id, rgb in frames:
        f = by_key[(topic, stamp)]
        assert f.frame_id == frame_id
        np.testing.assert_array_equal(f.rgb, rgb)  # raw and PNG are lossless, channel order kept
    only_raw = list(bag.iter_bag_images(path, topics=["/camera/image_raw"]))
    assert [f.stamp_ns for f in only_raw] == [1_000_000_000, 1_100_000_000, 1_200_000_000]


def test_jpeg_topic_and_missing_topic(tmp_path):
    img = np.full((16, 16, 3), (200, 40, 40), np.uint8)
    path = bag.write_image_bag(tmp_path / "j", [("/c", 5, "f", img)], storage="mcap",
                               compressed={"/c": "jpeg"})
    (frame,) = bag.iter_bag_images(path)
    assert np.abs(frame.rgb.astype(int) - img).max() < 8  # red stays red: RGB order survives JPEG
    with pytest.raises(KeyError, match="/nope"):
        list(bag.iter_bag_images(path, topics=["/nope"]))
