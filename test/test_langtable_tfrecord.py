import struct

import numpy as np
import pytest

from cobra_ros.langtable import tfrecord as tfr


def test_crc32c_known_vectors():
    # RFC 3720 (iSCSI) appendix B.4 test vectors plus the usual check string.
    assert tfr.crc32c(b"123456789") == 0xE3069283
    assert tfr.crc32c(bytes(32)) == 0x8A9136AA
    assert tfr.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tfr.crc32c(bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("size", [4096, 4099, 70001, 300000])
def test_crc32c_lane_path_matches_bytewise(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert tfr.crc32c(data) == tfr._crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_record_framing_matches_spec(tmp_path):
    path = tmp_path / "one.tfrecord"
    tfr.write_records(path, [b"abc"])
    raw = path.read_bytes()
    crc = tfr.crc32c(struct.pack("<Q", 3))
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert raw[:8] == struct.pack("<Q", 3)
    assert raw[8:12] == struct.pack("<I", masked)
    assert raw[12:15] == b"abc"
    assert raw[15:] == struct.pack("<I", tfr.masked_crc32c(b"abc"))


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    payloads = [b"", b"x", rng.bytes(5000), rng.bytes(100_000)]
    path = tmp_path / "data.tfrecord"
    tfr.write_records(path, payloads)
    assert list(tfr.iter_records(path)) == payloads


def _corrupt(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_payload_corruption_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.tfrecord"
    tfr.write_records(path, [b"first", b"second record"])
    second = 16 + len(b"first")
    _corrupt(path, second + 12 + 3)
    records = tfr.iter_records(path)
    assert next(records) == b"first"
    with pytest.raises(tfr.TFRecordCorruptError, match=rf"bad\.tfrecord.*offset {second}\b"):
        next(records)
    # Without verification the damaged bytes come through.
    assert list(tfr.iter_records(path, verify=False))[1] != b"second record"


def test_length_corruption_and_truncation(tmp_path):
    path = tmp_path / "bad.tfrecord"
    tfr.write_records(path, [b"payload"])
    _corrupt(path, 8)
    with pytest.raises(tfr.TFRecordCorruptError, match="length CRC"):
        list(tfr.iter_records(path))
    tfr.write_records(path, [b"payload"])
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(tfr.TFRecordCorruptError, match="truncated"):
        list(tfr.iter_records(path))


def test_example_round_trip():
    features = {
        "bytes": [b"a", b"", b"\x00\xff"],
        "text": "episode-1",
        "floats": np.array([1.5, -2.25, 3e-8], np.float32),
        "ints": np.array([0, 1, 127, 128, 300, -1, -(2**40), 2**62]),
        "bools": np.array([True, False, True]),
        "empty_floats": np.zeros(0, np.float32),
    }
    out = tfr.decode_example(tfr.encode_example(features))
    assert out["bytes"] == features["bytes"]
    assert out["text"] == [b"episode-1"]
    np.testing.assert_array_equal(out["floats"], features["floats"])
    assert out["floats"].dtype == np.float32
    np.testing.assert_array_equal(out["ints"], features["ints"])
    np.testing.assert_array_equal(out["bools"], [1, 0, 1])
    assert out["empty_floats"].dtype == np.float32 and out["empty_floats"].size == 0


def _field(number, wire, body):
    return tfr._varint(number << 3 | wire) + body


def test_decode_unpacked_repeated_fields_and_sequence_example():
    floats = b"".join(_field(1, 5, struct.pack("<f", v)) for v in (0.5, -1.0))
    ints = b"".join(_field(1, 0, tfr._varint(v)) for v in (7, -3, 1000))
    def entry(key, feature):
        return tfr._len_field(1, tfr._len_field(1, key.encode()) + tfr._len_field(2, feature))
    features = entry("f", tfr._len_field(2, floats)) + entry("i", tfr._len_field(3, ints))
    # A SequenceExample keeps its context in field 1 (same layout as Example) and lists in field 2.
    payload = tfr._len_field(1, features) + tfr._len_field(2, b"\x0a\x00")
    out = tfr.decode_example(payload)
    np.testing.assert_array_equal(out["f"], [0.5, -1.0])
    np.testing.assert_array_equal(out["i"], [7, -3, 1000])
