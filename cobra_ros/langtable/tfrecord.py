"""TFRecord files and `tf.train.Example` protos without TensorFlow.

Record framing: u64 length, u32 masked crc32c(length), payload, u32 masked crc32c(payload), all
little-endian. An Example is `Features features = 1`, Features is
`map<string, Feature> feature = 1`, and a Feature holds one of bytes_list = 1, float_list = 2,
int64_list = 3, each `repeated value = 1`.
Decoded examples are plain dicts: name -> list[bytes] | float32 array | int64 array.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

import numpy as np

# ---------------------------------------------------------------- crc32c (Castagnoli)

_POLY = 0x82F63B78  # reflected 0x1EDC6F41


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ _POLY, table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _crc_bytes(reg: int, data: bytes) -> int:
    table = _TABLE_LIST
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


_shift_tables: dict[int, list] = {}


def _zeros_operator(n: int) -> list:
    """Tables for the linear map reg -> register after feeding n zero bytes (split by input
    byte)."""
    if n not in _shift_tables:
        regs = np.array([1 << k for k in range(32)], dtype=np.uint32)
        for _ in range(n):
            regs = _TABLE[regs & 0xFF] ^ (regs >> 8)
        tables = []
        for byte in range(4):
            t = np.zeros(256, dtype=np.uint32)
            for v in range(256):
                acc = 0
                for bit in range(8):
                    if v >> bit & 1:
                        acc ^= int(regs[8 * byte + bit])
                t[v] = acc
            tables.append([int(x) for x in t])
        _shift_tables[n] = tables
    return _shift_tables[n]


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`. Large inputs run as many interleaved lanes in numpy, then are
    stitched."""
    n = len(data)
    if n < 4096:
        return _crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    # Starting from 0xFFFFFFFF equals starting from 0 with the first 4 bytes inverted, and leading
    # zero bytes leave a zero register unchanged, so we can left-pad to a whole number of lanes.
    lane = 1 << max(8, (int(np.sqrt(n)).bit_length()))
    lanes = -(-n // lane)
    buf = np.zeros(lanes * lane, dtype=np.uint8)
    buf[lanes * lane - n:] = np.frombuffer(data, dtype=np.uint8)
    buf[lanes * lane - n:lanes * lane - n + 4] ^= 0xFF
    chunks = buf.reshape(lanes, lane)
    regs = np.zeros(lanes, dtype=np.uint32)
    for j in range(lane):
        regs = _TABLE[(regs ^ chunks[:, j]) & 0xFF] ^ (regs >> 8)
    t0, t1, t2, t3 = _zeros_operator(lane)
    reg = 0
    for r in regs.tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ r
    return reg ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- TFRecord framing

class TFRecordCorruptError(ValueError):
    pass


def iter_records(path, verify: bool = True) -> Iterator[bytes]:
    """Yield each record's payload; CRC mismatches and truncation raise TFRecordCorruptError."""
    path = Path(path)
    with open(path, "rb") as f:
        offset = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise TFRecordCorruptError(f"{path}: truncated record header at offset {offset}")
            length, length_crc = struct.unpack("<QI", header)
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise TFRecordCorruptError(f"{path}: length CRC mismatch at offset {offset}")
            payload = f.read(length)
            footer = f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise TFRecordCorruptError(f"{path}: truncated record at offset {offset} "
                                           f"(length {length})")
            if verify and masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise TFRecordCorruptError(f"{path}: payload CRC mismatch in record at offset "
                                           f"{offset}")
            yield payload
            offset += 16 + length


class TFRecordWriter:
    """`with TFRecordWriter(path) as w: w.write(payload)`."""

    def __init__(self, path):
        self.path = Path(path)
        self._file = open(self.path, "wb")

    def write(self, payload: bytes) -> None:
        length = struct.pack("<Q", len(payload))
        self._file.write(length + struct.pack("<I", masked_crc32c(length)))
        self._file.write(payload)
        self._file.write(struct.pack("<I", masked_crc32c(payload)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_records(path, payloads) -> None:
    with TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)


# ---------------------------------------------------------------- protobuf wire format

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """Yield (field_number, wire_type, value); value is an int or a memoryview for LEN fields."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            value = buf[pos:pos + size]
            pos += size
        elif wire == _FIXED32:
            value = buf[pos:pos + 4]
            pos += 4
        elif wire == _FIXED64:
            value = buf[pos:pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def _decode_packed_varints(data: memoryview) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.int64)
    if raw.max() < 0x80:  # every value fits one byte: as instruction codes and flags do
        return raw.astype(np.int64)
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(len(ends)), ends - starts + 1)
    position = np.arange(raw.size) - starts[group]
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts).view(np.int64)


def _decode_feature(buf: memoryview):
    for number, _, value in _fields(buf):
        if number == 1:  # BytesList
            return [bytes(v) for n, _, v in _fields(value) if n == 1]
        if number == 2:  # FloatList: packed (LEN) or one fixed32 per value
            parts = [np.frombuffer(v, dtype="<f4") for n, _, v in _fields(value) if n == 1]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if number == 3:  # Int64List: packed (LEN) or one varint per value
            parts = []
            for n, wire, v in _fields(value):
                if n != 1:
                    continue
                if wire == _LEN:
                    parts.append(_decode_packed_varints(v))
                else:
                    parts.append(np.array([v], dtype=np.uint64).view(np.int64))
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return None  # a Feature with no kind set


def decode_example(payload: bytes) -> dict:
    """Parse a serialized tf.train.Example (or a SequenceExample's context) into a dict."""
    out = {}
    for number, _, features in _fields(memoryview(payload)):
        if number != 1:  # SequenceExample.feature_lists (2) share this layout; we read features
            continue
        for n, _, entry in _fields(features):
            if n != 1:
                continue
            key, feature = "", None
            for en, _, ev in _fields(entry):
                if en == 1:
                    key = bytes(ev).decode("utf-8")
                elif en == 2:
                    feature = _decode_feature(ev)
            out[key] = feature
    return out


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(data)) + data


def _encode_packed_varints(values: np.ndarray) -> bytes:
    if values.size and values.min() >= 0 and values.max() < 0x80:
        return values.astype(np.uint8).tobytes()
    return b"".join(_varint(int(v)) for v in values)


def _encode_feature(value) -> bytes:
    if isinstance(value, (bytes, str)):
        value = [value]
    if isinstance(value, np.ndarray):
        arr = value.ravel()
    elif len(value) and isinstance(value[0], (bytes, str)):
        items = [v.encode("utf-8") if isinstance(v, str) else v for v in value]
        return _len_field(1, b"".join(_len_field(1, v) for v in items))
    elif len(value) == 0:  # an empty Python list is taken as an empty bytes_list
        return _len_field(1, b"")
    else:
        arr = np.asarray(value).ravel()
    if arr.dtype.kind == "f":
        kind, body = 2, arr.astype("<f4").tobytes()
    elif arr.dtype.kind in "iub":
        kind, body = 3, _encode_packed_varints(arr.astype(np.int64))
    elif arr.dtype.kind in "OSU":
        return _encode_feature(list(arr.tolist()))
    else:
        raise TypeError(f"cannot store dtype {arr.dtype} in a tf.train.Feature")
    return _len_field(kind, _len_field(1, body) if arr.size else b"")


def encode_example(features: dict) -> bytes:
    """Serialize {name: bytes | list[bytes] | array-like of floats / ints / bools} as a
    tf.train.Example.

    Floats become a packed float_list, ints and bools a packed int64_list (as TensorFlow writes
    them).
    """
    entries = b"".join(
        _len_field(1, _len_field(1, key.encode("utf-8"))
                   + _len_field(2, _encode_feature(features[key])))
        for key in sorted(features)
    )
    return _len_field(1, entries)
