"""Language-Table RLDS episodes on disk (TFDS layout) without TensorFlow: reader and writer.

A version dir holds dataset_info.json, features.json and the TFRecord shards, named by the split's
file-name template in dataset_info.json (`<name>-<split>.tfrecord-NNNNN-of-MMMMM` by default,
`<name>-<split>.tfrecord-NNNNN` in some TFDS writers); each record is one tf.train.Example per
episode with the step fields flattened and concatenated over steps (`steps/observation/rgb`: one
encoded image per step, `steps/action`: 2*T floats, ...). Shapes and image encodings are read
from features.json when it is there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from cobra_ros.langtable.tfrecord import (TFRecordWriter, decode_example, encode_example,
                                          iter_records)

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
_KNOWN_STEP_KEYS = {RGB, INSTRUCTION, EFFECTOR, EFFECTOR_TARGET, ACTION, REWARD,
                    IS_FIRST, IS_LAST, IS_TERMINAL}


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
        return tuple(None if int(d) < 0 else int(d)
                     for d in node.get("shape", {}).get("dimensions", []))

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
            raise ValueError(f"unsupported feature type at {prefix[:-1]!r}: "
                             f"{node.get('pythonClassName')}")

    walk(features_json, "", False)
    return out


def language_table_features(image_shape=DEFAULT_IMAGE_SHAPE, image_format: str = "png") -> dict:
    """features.json content for the Language-Table episode schema."""

    def tensor(shape, dtype, cls="tensor_feature.Tensor"):
        return {"pythonClassName": _TFDS + cls,
                "tensor": {"shape": {"dimensions": [str(d) for d in shape]} if shape else {},
                           "dtype": dtype, "encoding": "none"}}

    def features(children):
        return {"pythonClassName": _TFDS + "features_dict.FeaturesDict",
                "featuresDict": {"features": children}}

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

# Shard names the way tensorflow-datasets derives them (tensorflow_datasets/core/naming.py,
# ShardedFileTemplate): each split in dataset_info.json has a `filepathTemplate` (empty in files
# written by older TFDS: the default below), formatted with the dataset `name`, the split, the file
# suffix from `fileFormat` and the shard numbers, zero-padded to max(5, digits of the shard count),
# for every entry of `shardLengths`.
DEFAULT_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_MIN_SHARD_DIGITS = 5
_TEMPLATE_REGEX = {  # naming.py's _VAR_REGEX_MAPPING, for the glob fallback
    "DATASET": r"(?P<dataset>[a-zA-Z]\w*)",
    "SPLIT": r"(?P<split>[\w-]+)",
    "FILEFORMAT": r"(?P<fileformat>\w+)",
    "SHARD_INDEX": r"(?P<index>\d{5,})",
    "NUM_SHARDS": r"(?P<count>\d{5,})",
    "SHARD_X_OF_Y": r"(?P<index>\d{5,})-of-(?P<count>\d{5,})",
}
# Names TFDS writers have used, tried in turn when dataset_info.json does not list the shards.
_KNOWN_TEMPLATES = (DEFAULT_FILENAME_TEMPLATE, "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}")


def read_dataset_info(version_dir) -> dict:
    """dataset_info.json as a dict ({} when the version dir has none)."""
    path = Path(version_dir) / "dataset_info.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _split_info(info: dict, split: str) -> dict | None:
    return next((s for s in info.get("splits", []) if s.get("name") == split), None)


def shard_filenames(template: str, dataset: str, split: str, fileformat: str,
                    num_shards: int) -> list:
    """Relative paths of a split's shards from its TFDS file-name template."""
    digits = max(_MIN_SHARD_DIGITS, len(str(num_shards)))
    names = []
    for index in range(num_shards):
        x, y = f"{index:0{digits}d}", f"{num_shards:0{digits}d}"
        try:
            names.append(template.format(DATASET=dataset, SPLIT=split, FILEFORMAT=fileformat,
                                         SHARD_INDEX=x, NUM_SHARDS=y, SHARD_X_OF_Y=f"{x}-of-{y}"))
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"shard file-name template {template!r} cannot be formatted: "
                             f"{err}") from None
    return names


def _template_regex(template: str, dataset: str | None, split: str, fileformat: str) -> re.Pattern:
    """A file-name template as a regular expression; dataset None matches any dataset name."""
    fixed = {"SPLIT": re.escape(split), "FILEFORMAT": re.escape(fileformat)}
    if dataset is not None:
        fixed["DATASET"] = re.escape(dataset)
    pattern = re.escape(template)
    for var, regex in _TEMPLATE_REGEX.items():
        pattern = pattern.replace(re.escape("{" + var + "}"), fixed.get(var, regex))
    return re.compile(pattern)


def _glob_shards(version_dir: Path, templates, dataset: str | None, split: str,
                 fileformat: str) -> list:
    """Shards found on disk by file name: the first template that matches any file wins."""
    files = [p for p in version_dir.rglob("*") if p.is_file()]
    for template in templates:
        regex = _template_regex(template, dataset, split, fileformat)
        found = []
        for path in files:
            match = regex.fullmatch(path.relative_to(version_dir).as_posix())
            if match:
                found.append((int(match.group("index")), path))
        if found:
            return [path for _, path in sorted(found)]
    return []


def shard_paths(version_dir, split: str = "train") -> list:
    """The split's TFRecord shards in shard order.

    From dataset_info.json's template and shard count when it has them (every listed shard must
    exist); otherwise the files whose names fit the template or a known TFDS naming.
    """
    version_dir = Path(version_dir)
    info = read_dataset_info(version_dir)
    fileformat = info.get("fileFormat") or "tfrecord"
    if fileformat != "tfrecord":
        raise ValueError(f"{version_dir}: shards are {fileformat!r}; "
                         "only TFRecord shards can be read")
    dataset = info.get("name")
    split_info = _split_info(info, split) or {}
    template = split_info.get("filepathTemplate") or DEFAULT_FILENAME_TEMPLATE
    lengths = split_info.get("shardLengths")
    if lengths and dataset:
        paths = [version_dir / name
                 for name in shard_filenames(template, dataset, split, fileformat, len(lengths))]
        missing = [p.name for p in paths if not p.exists()]
        if not missing:
            return paths
        if len(missing) < len(paths):
            raise FileNotFoundError(f"{version_dir}: {len(missing)} of the {len(paths)} {split!r} "
                                    "shards dataset_info.json lists are missing, "
                                    f"e.g. {missing[0]}")
    templates = dict.fromkeys((template, *_KNOWN_TEMPLATES))
    paths = _glob_shards(version_dir, templates, dataset, split, fileformat)
    if not paths:
        example = shard_filenames(template, dataset or "<name>", split, fileformat, 1)[0]
        raise FileNotFoundError(f"no {split!r} TFRecord shards in {version_dir} "
                                f"(names like {example})")
    return paths


def count_episodes(version_dir, split: str = "train") -> int | None:
    """Episode count from dataset_info.json's shard lengths (None if it does not say)."""
    lengths = (_split_info(read_dataset_info(version_dir), split) or {}).get("shardLengths")
    return None if lengths is None else sum(int(n) for n in lengths)


def _tensor_values(values, spec: FeatureSpec, key: str) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if spec.encoding not in ("none", "bytes", ""):
        raise ValueError(f"{key}: tensor encoding {spec.encoding!r} is not supported "
                         "(none or bytes)")
    if spec.encoding == "bytes":  # TFDS can store big tensors as raw little-endian bytes per item
        little = dtype.newbyteorder("<")
        return np.concatenate([np.frombuffer(b, dtype=little) for b in values]).astype(dtype)
    return np.asarray(values).astype(dtype)


def parse_episode(example: dict, features: dict | None = None, drop_terminal: bool = True,
                  decode_images: bool = True) -> Episode:
    """Turn a decoded episode Example into an Episode.

    is_terminal steps are dropped by default, as RLDS pipelines do."""
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
                raise ValueError(f"{key}: {flat.size} values do not split into steps of shape "
                                 f"{spec.shape}")
            items = flat.reshape((flat.size // size,) + tuple(spec.shape))
        if num_steps is not None and len(items) != num_steps:
            raise ValueError(f"{key} has {len(items)} steps, other step features have {num_steps}")
        num_steps = len(items)
        per_step[key] = items
    num_steps = num_steps or 0

    def column(key, default):
        return per_step[key] if key in per_step else [default] * num_steps

    rgbs = column(RGB, None)
    zero2 = np.zeros(2, np.float32)
    steps = []
    for t in range(num_steps):
        if bool(column(IS_TERMINAL, False)[t]) and drop_terminal:
            continue
        rgb = None
        if rgbs[t] is not None and decode_images:
            rgb = decode_image(rgbs[t])
            expect = features.get(RGB).shape if RGB in features else ()
            if any(e is not None and e != g for e, g in zip(expect, rgb.shape)):
                raise ValueError(f"{RGB} step {t}: decoded shape {rgb.shape}, "
                                 f"features.json says {expect}")
        instruction = column(INSTRUCTION, None)[t]
        steps.append(Step(
            rgb=rgb,
            effector_translation=np.asarray(column(EFFECTOR, zero2)[t], np.float32),
            effector_target_translation=np.asarray(column(EFFECTOR_TARGET, zero2)[t], np.float32),
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
    lengths = (_split_info(read_dataset_info(version_dir), split) or {}).get("shardLengths", [])
    return [int(n) for n in lengths] if len(lengths) == num_shards else None


def iter_episodes(version_dir, split: str = "train", drop_terminal: bool = True,
                  decode_images: bool = True, verify_crc: bool = True, start: int = 0,
                  limit: int | None = None) -> Iterator[Episode]:
    """Episodes start .. start+limit of a split in file order; whole shards before `start` are
    skipped unread when dataset_info.json gives their lengths."""
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
                example = decode_example(payload)
                yield parse_episode(example, features, drop_terminal, decode_images)
            index += 1


# ---------------------------------------------------------------- writing

def episode_to_example(episode: Episode, image_format: str = "png",
                       jpeg_quality: int = 95) -> dict:
    steps = episode.steps

    def stack(attr, dtype):
        values = [np.asarray(getattr(s, attr), dtype) for s in steps]
        return np.asarray(values, dtype).reshape(len(steps), -1)

    return {
        "episode_id": [episode.episode_id.encode("utf-8")],
        ACTION: stack("action", np.float32).ravel(),
        REWARD: np.asarray([s.reward for s in steps], np.float32),
        IS_FIRST: np.asarray([s.is_first for s in steps], bool),
        IS_LAST: np.asarray([s.is_last for s in steps], bool),
        IS_TERMINAL: np.asarray([s.is_terminal for s in steps], bool),
        EFFECTOR: stack("effector_translation", np.float32).ravel(),
        EFFECTOR_TARGET: stack("effector_target_translation", np.float32).ravel(),
        INSTRUCTION: np.concatenate([encode_instruction(s.instruction or episode.instruction)
                                     for s in steps]) if steps else np.zeros(0, np.int64),
        RGB: [encode_image(s.rgb, image_format, jpeg_quality) for s in steps],
    }


def write_rlds(version_dir, episodes: Iterable[Episode], name: str = "language_table",
               split: str = "train",
               image_format: str = "png", episodes_per_shard: int = 100, jpeg_quality: int = 95,
               version: str = "0.0.1", filename_template: str = DEFAULT_FILENAME_TEMPLATE) -> list:
    """Write episodes as a TFDS version dir in the Language-Table schema; returns the shard paths.

    `filename_template` names the shards as TFDS does (e.g.
    "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}") and is recorded in dataset_info.json.
    """
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
    names = shard_filenames(filename_template, name, split, "tfrecord", len(temp_paths))
    paths = [version_dir / n for n in names]
    for temp, path in zip(temp_paths, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, path)
    features = language_table_features(image_shape or DEFAULT_IMAGE_SHAPE, image_format)
    (version_dir / "features.json").write_text(json.dumps(features, indent=2))
    info = {
        "name": name,
        "version": version,
        "fileFormat": "tfrecord",
        "description": "Language-Table schema episodes written by cobra_ros.langtable.rlds",
        "splits": [{"name": split, "numBytes": str(sum(p.stat().st_size for p in paths)),
                    "shardLengths": [str(n) for n in lengths],
                    "filepathTemplate": filename_template}],
    }
    (version_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return paths
