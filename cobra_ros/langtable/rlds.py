"""Language-Table RLDS episodes on disk (TFDS layout) without TensorFlow: reader and writer.

A version dir holds dataset_info.json, features.json and `<name>-<split>.tfrecord-NNNNN-of-MMMMM`
shards; each record is one tf.train.Example per episode with the step fields flattened and
concatenated over steps (`steps/observation/rgb`: one encoded image per step, `steps/action`: 2*T
floats, ...). Shapes and image encodings are read from features.json when it is there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from cobra_ros.langtable.tfrecord import TFRecordWriter, decode_example, encode_example, iter_records

INSTRUCTION_LENGTH = 512
DEFAULT_IMAGE_SHAPE = (360, 640, 3)
_TFDS = "tensorflow_datasets.core.features."

RGB = "steps/observation/rgb"
INSTRUCTION = "steps/observation/instruction"
EFFECTOR = "steps/observation/effector_translation"
EFFECTOR_TARGET = "steps/observation/effector_target_translation"
ACTION = "steps/action"
REWARD = "steps/reward"
IS_FIRST, IS_LAST, IS_TERMINAL = "steps/is_first", "steps/is_last", "steps/is_terminal"
_KNOWN_STEP_KEYS = {RGB, INSTRUCTION, EFFECTOR, EFFECTOR_TARGET, ACTION, REWARD, IS_FIRST, IS_LAST, IS_TERMINAL}


@dataclass
class Step:
    rgb: np.ndarray | None  # HxWx3 uint8 RGB (None when images were not decoded)
    effector_translation: np.ndarray  # (2,) float32, metres
    effector_target_translation: np.ndarray  # (2,) float32
    action: np.ndarray  # (2,) float32 effector delta
    reward: float
    is_first: bool
    is_last: bool
    is_terminal: bool
    instruction: str = ""
    extras: dict = field(default_factory=dict)  # any other per-step feature, by its flat key


@dataclass
class Episode:
    episode_id: str
    instruction: str
    steps: list


# ---------------------------------------------------------------- instructions and images

def encode_instruction(text: str) -> np.ndarray:
    """UTF-8 bytes right-padded with zeros to 512 int32 codes (environments/language_table.py)."""
    data = text.encode("utf-8")
    if len(data) > INSTRUCTION_LENGTH:
        raise ValueError(f"instruction longer than {INSTRUCTION_LENGTH} bytes: {text[:40]!r}...")
    codes = np.zeros(INSTRUCTION_LENGTH, np.int32)
    codes[:len(data)] = np.frombuffer(data, np.uint8)
    return codes


def decode_instruction(codes) -> str:
    codes = np.asarray(codes)
    return bytes(codes[codes != 0].astype(np.uint8)).decode("utf-8", errors="replace")


def image_format(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return "unknown"


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> HxWx3 uint8 RGB."""
    if image_format(data) == "unknown":
        raise ValueError(f"not a PNG or JPEG image (starts with {bytes(data[:4])!r})")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("OpenCV could not decode the image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 95) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    if not ok:
        raise RuntimeError("OpenCV failed to encode the image")
    return buf.tobytes()


# ---------------------------------------------------------------- features.json

@dataclass(frozen=True)
class FeatureSpec:
    kind: str  # "tensor" | "image" | "text"
    dtype: str
    shape: tuple  # per step for step features; None marks an unknown dimension
    encoding: str  # images: png / jpeg; tensors: none / bytes
    per_step: bool


def parse_features(features_json: dict) -> dict:
    """Flatten a TFDS features.json into {flat key: FeatureSpec}, e.g. 'steps/observation/rgb'."""
    out = {}

    def dims(node):
        return tuple(None if int(d) < 0 else int(d) for d in node.get("shape", {}).get("dimensions", []))

    def walk(node, prefix, per_step):
        if "featuresDict" in node:
            for name, child in node["featuresDict"]["features"].items():
                walk(child, f"{prefix}{name}/", per_step)
        elif "sequence" in node:
            walk(node["sequence"]["feature"], prefix, True)
        elif "image" in node:
            img = node["image"]
            out[prefix[:-1]] = FeatureSpec("image", img.get("dtype", "uint8"), dims(img),
                                           img.get("encodingFormat", ""), per_step)
        elif "tensor" in node:
            t = node["tensor"]
            out[prefix[:-1]] = FeatureSpec("tensor", t.get("dtype", "float32"), dims(t),
                                           t.get("encoding", "none"), per_step)
        elif "text" in node:
            out[prefix[:-1]] = FeatureSpec("text", "string", (), "none", per_step)
        else:
            raise ValueError(f"unsupported feature type at {prefix[:-1]!r}: {node.get('pythonClassName')}")

    walk(features_json, "", False)
    return out


def language_table_features(image_shape=DEFAULT_IMAGE_SHAPE, image_format: str = "png") -> dict:
    """features.json content for the Language-Table episode schema."""

    def tensor(shape, dtype, cls="tensor_feature.Tensor"):
        return {"pythonClassName": _TFDS + cls,
                "tensor": {"shape": {"dimensions": [str(d) for d in shape]} if shape else {},
                           "dtype": dtype, "encoding": "none"}}

    def features(children):
        return {"pythonClassName": _TFDS + "features_dict.FeaturesDict", "featuresDict": {"features": children}}

    observation = features({
        "effector_target_translation": tensor((2,), "float32"),
        "effector_translation": tensor((2,), "float32"),
        "instruction": tensor((INSTRUCTION_LENGTH,), "int32"),
        "rgb": {"pythonClassName": _TFDS + "image_feature.Image",
                "image": {"shape": {"dimensions": [str(d) for d in image_shape]}, "dtype": "uint8",
                          "encodingFormat": image_format}},
    })
    step = features({
        "action": tensor((2,), "float32"),
        "is_first": tensor((), "bool", "scalar.Scalar"),
        "is_last": tensor((), "bool", "scalar.Scalar"),
        "is_terminal": tensor((), "bool", "scalar.Scalar"),
        "observation": observation,
        "reward": tensor((), "float32", "scalar.Scalar"),
    })
    return features({
        "episode_id": {"pythonClassName": _TFDS + "text_feature.Text", "text": {}},
        "steps": {"pythonClassName": _TFDS + "dataset_feature.Dataset",
                  "sequence": {"feature": step, "length": "-1"}},
    })


def read_features(version_dir) -> dict:
    path = Path(version_dir) / "features.json"
    if not path.exists():
        return parse_features(language_table_features())
    return parse_features(json.loads(path.read_text()))


# ---------------------------------------------------------------- reading

def shard_paths(version_dir, split: str = "train") -> list:
    version_dir = Path(version_dir)
    name = "*"
    info = version_dir / "dataset_info.json"
    if info.exists():
        name = json.loads(info.read_text()).get("name", "*")
    paths = sorted(version_dir.glob(f"{name}-{split}.tfrecord-*-of-*"))
    if not paths:
        raise FileNotFoundError(f"no {split!r} TFRecord shards in {version_dir}")
    return paths


def count_episodes(version_dir, split: str = "train") -> int | None:
    """Episode count from dataset_info.json's shard lengths (None if it does not say)."""
    info = Path(version_dir) / "dataset_info.json"
    if not info.exists():
        return None
    for s in json.loads(info.read_text()).get("splits", []):
        if s.get("name") == split and "shardLengths" in s:
            return sum(int(n) for n in s["shardLengths"])
    return None


def _tensor_values(values, spec: FeatureSpec, key: str) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if spec.encoding not in ("none", "bytes", ""):
        raise ValueError(f"{key}: tensor encoding {spec.encoding!r} is not supported (none or bytes)")
    if spec.encoding == "bytes":  # TFDS can store big tensors as raw little-endian bytes per item
        return np.concatenate([np.frombuffer(b, dtype=dtype.newbyteorder("<")) for b in values]).astype(dtype)
    return np.asarray(values).astype(dtype)


def parse_episode(example: dict, features: dict | None = None, drop_terminal: bool = True,
                  decode_images: bool = True) -> Episode:
    """Turn a decoded episode Example into an Episode (is_terminal steps dropped, as RLDS pipelines do)."""
    features = features or parse_features(language_table_features())
    per_step = {}
    num_steps = None
    for key, spec in features.items():
        if not spec.per_step or key not in example:
            continue
        values = example[key]
        if spec.kind == "image" or (spec.kind == "tensor" and spec.dtype == "string"):
            items = list(values)
        else:
            flat = _tensor_values(values, spec, key)
            size = int(np.prod([d for d in spec.shape if d is not None])) if spec.shape else 1
            if None in spec.shape or flat.size % size:
                raise ValueError(f"{key}: {flat.size} values do not split into steps of shape {spec.shape}")
            items = flat.reshape((flat.size // size,) + tuple(spec.shape))
        if num_steps is not None and len(items) != num_steps:
            raise ValueError(f"{key} has {len(items)} steps, other step features have {num_steps}")
        num_steps = len(items)
        per_step[key] = items
    num_steps = num_steps or 0

    def column(key, default):
        return per_step[key] if key in per_step else [default] * num_steps

    rgbs = column(RGB, None)
    steps = []
    for t in range(num_steps):
        if bool(column(IS_TERMINAL, False)[t]) and drop_terminal:
            continue
        rgb = None
        if rgbs[t] is not None and decode_images:
            rgb = decode_image(rgbs[t])
            expect = features.get(RGB).shape if RGB in features else ()
            if any(e is not None and e != g for e, g in zip(expect, rgb.shape)):
                raise ValueError(f"{RGB} step {t}: decoded shape {rgb.shape}, features.json says {expect}")
        instruction = column(INSTRUCTION, None)[t]
        steps.append(Step(
            rgb=rgb,
            effector_translation=np.asarray(column(EFFECTOR, np.zeros(2, np.float32))[t], np.float32),
            effector_target_translation=np.asarray(column(EFFECTOR_TARGET, np.zeros(2, np.float32))[t], np.float32),
            action=np.asarray(column(ACTION, np.zeros(2, np.float32))[t], np.float32),
            reward=float(column(REWARD, 0.0)[t]),
            is_first=bool(column(IS_FIRST, t == 0)[t]),
            is_last=bool(column(IS_LAST, t == num_steps - 1)[t]),
            is_terminal=bool(column(IS_TERMINAL, False)[t]),
            instruction=decode_instruction(instruction) if instruction is not None else "",
            extras=_extras(per_step, features, t, decode_images),
        ))
    episode_id = example.get("episode_id", [b""])
    episode_id = episode_id[0] if isinstance(episode_id, list) and episode_id else episode_id
    episode_id = episode_id.decode("utf-8") if isinstance(episode_id, bytes) else str(episode_id)
    instruction = steps[0].instruction if steps else ""
    return Episode(episode_id, instruction, steps)


def _extras(per_step, features, t, decode_images):
    out = {}
    for key, items in per_step.items():
        if key in _KNOWN_STEP_KEYS:
            continue
        value = items[t]
        if features[key].kind == "image" and decode_images:
            value = decode_image(value)
        out[key] = value
    return out


def _shard_lengths(version_dir, split: str, num_shards: int) -> list | None:
    info = Path(version_dir) / "dataset_info.json"
    if info.exists():
        for s in json.loads(info.read_text()).get("splits", []):
            if s.get("name") == split and len(s.get("shardLengths", [])) == num_shards:
                return [int(n) for n in s["shardLengths"]]
    return None


def iter_episodes(version_dir, split: str = "train", drop_terminal: bool = True, decode_images: bool = True,
                  verify_crc: bool = True, start: int = 0, limit: int | None = None) -> Iterator[Episode]:
    """Episodes start .. start+limit of a split in file order; whole shards before `start` are skipped
    unread when dataset_info.json gives their lengths."""
    features = read_features(version_dir)
    paths = shard_paths(version_dir, split)
    lengths = _shard_lengths(version_dir, split, len(paths))
    index, stop = 0, None if limit is None else start + limit
    for i, path in enumerate(paths):
        if lengths and index + lengths[i] <= start:
            index += lengths[i]
            continue
        for payload in iter_records(path, verify=verify_crc):
            if stop is not None and index >= stop:
                return
            if index >= start:
                yield parse_episode(decode_example(payload), features, drop_terminal, decode_images)
            index += 1


# ---------------------------------------------------------------- writing

def episode_to_example(episode: Episode, image_format: str = "png", jpeg_quality: int = 95) -> dict:
    steps = episode.steps

    def stack(attr, dtype):
        return np.asarray([np.asarray(getattr(s, attr), dtype) for s in steps], dtype).reshape(len(steps), -1)

    return {
        "episode_id": [episode.episode_id.encode("utf-8")],
        ACTION: stack("action", np.float32).ravel(),
        REWARD: np.asarray([s.reward for s in steps], np.float32),
        IS_FIRST: np.asarray([s.is_first for s in steps], bool),
        IS_LAST: np.asarray([s.is_last for s in steps], bool),
        IS_TERMINAL: np.asarray([s.is_terminal for s in steps], bool),
        EFFECTOR: stack("effector_translation", np.float32).ravel(),
        EFFECTOR_TARGET: stack("effector_target_translation", np.float32).ravel(),
        INSTRUCTION: np.concatenate([encode_instruction(s.instruction or episode.instruction) for s in steps])
        if steps else np.zeros(0, np.int64),
        RGB: [encode_image(s.rgb, image_format, jpeg_quality) for s in steps],
    }


def write_rlds(version_dir, episodes: Iterable[Episode], name: str = "language_table", split: str = "train",
               image_format: str = "png", episodes_per_shard: int = 100, jpeg_quality: int = 95,
               version: str = "0.0.1") -> list:
    """Write episodes as a TFDS version dir in the Language-Table schema; returns the shard paths."""
    version_dir = Path(version_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{split}.tfrecord"
    temp_paths, lengths, image_shape = [], [], None
    writer = None
    for episode in episodes:
        if writer is None or lengths[-1] == episodes_per_shard:
            if writer:
                writer.close()
            temp_paths.append(version_dir / f".{stem}-{len(temp_paths):05d}.partial")
            writer = TFRecordWriter(temp_paths[-1])
            lengths.append(0)
        if image_shape is None and episode.steps and episode.steps[0].rgb is not None:
            image_shape = episode.steps[0].rgb.shape
        writer.write(encode_example(episode_to_example(episode, image_format, jpeg_quality)))
        lengths[-1] += 1
    if writer:
        writer.close()
    paths = []
    for i, temp in enumerate(temp_paths):
        paths.append(version_dir / f"{stem}-{i:05d}-of-{len(temp_paths):05d}")
        os.replace(temp, paths[-1])
    features = language_table_features(image_shape or DEFAULT_IMAGE_SHAPE, image_format)
    (version_dir / "features.json").write_text(json.dumps(features, indent=2))
    info = {
        "name": name,
        "version": version,
        "fileFormat": "tfrecord",
        "description": "Language-Table schema episodes written by cobra_ros.langtable.rlds",
        "splits": [{"name": split, "numBytes": str(sum(p.stat().st_size for p in paths)),
                    "shardLengths": [str(n) for n in lengths],
                    "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}],
    }
    (version_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return paths
