"""Parameters of the cobra node: declarations with descriptors, validation, and a typed snapshot.

config/cobra.yaml holds the same names and defaults. Ranges are enforced by rclpy from the
descriptors; everything else (choices, names, cross-parameter rules, whether a model directory
looks loadable) by `check`, which the node runs in its on-set-parameters callback.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from cobra_ros.model.tokenizer import DESCRIBE_PROMPT
from cobra_ros.ros.image_conversion import DEFAULT_MAX_PIXELS
from cobra_ros.ros.requests import RequestError, check_question

TRANSPORTS = ("raw", "compressed")
DTYPES = ("float32", "bfloat16", "float16")
MODEL_PARAMETERS = ("model_path", "device", "dtype")  # changing one loads the model again


@dataclass(frozen=True)
class Spec:
    default: Any
    description: str
    range: tuple | None = None
    read_only: bool = False


# Declared in this order: a rule that involves two parameters sees the first one already declared.
SPECS: dict[str, Spec] = {
    "model_path": Spec(
        "models/langtable-tiny",
        "Cobra model directory (release layout). A relative path is looked up in the working directory, the "
        "package share directory, then the source tree. Set at run time, the new model loads in the background "
        "while the old one keeps serving; a model that fails to load is refused and the value reverts."),
    "device": Spec("cpu", "torch device: cpu, cuda or cuda:N. Changing it loads the model again."),
    "dtype": Spec("float32", "weights dtype: float32, bfloat16 or float16. Changing it loads the model again."),
    "max_question_chars": Spec(2000, "longest question (and prompt) accepted, in characters; longer ones are "
                                     "refused, never truncated", (1, 1_000_000)),
    "prompt": Spec(DESCRIBE_PROMPT, "prompt of the periodic descriptions and of Describe goals without one"),
    "max_new_tokens_limit": Spec(256, "upper bound on max_new_tokens of any request", (1, 8192)),
    "max_new_tokens": Spec(64, "generation budget of descriptions and of requests that ask for 0 "
                               "(at most max_new_tokens_limit)", (1, 8192)),
    "describe_rate_hz": Spec(1.0, "rate of descriptions published on ~/description (node clock, so sim time "
                                  "when use_sim_time); 0 = off. Never faster than the model or the camera.",
                             (0.0, 100.0)),
    "image_topics": Spec(["image"], "camera topics (relative names follow the namespace and remappings); "
                                    "the first is the default camera of requests"),
    "transport": Spec("raw", "raw: sensor_msgs/Image on <topic>; compressed: sensor_msgs/CompressedImage on "
                             "<topic>/compressed"),
    "stream_tokens": Spec(False, "publish the text so far on ~/description/stream after every token"),
    "publish_annotated": Spec(False, "publish the frame with the latest description or answer drawn on it "
                                     "on ~/annotated"),
    "max_image_pixels": Spec(DEFAULT_MAX_PIXELS, "larger frames are rejected (width x height)", (1, 1 << 31)),
    "request_timeout_s": Spec(30.0, "a request that waits longer than this for the model is answered with "
                                    "an error (and its generation stopped)", (0.1, 3600.0)),
    "torch_threads": Spec(0, "CPU threads torch may use (set at configure); 0 = torch's default, one per core. "
                             "Fewer leave cores to the rest of the robot", (0, 1024)),
    "queue_size": Spec(8, "requests that may wait for the model; further ones are refused as busy",
                       (1, 256), read_only=True),
    "autostart": Spec(True, "configure and activate the lifecycle node at start-up", read_only=True),
}


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        else:
            desc.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if name == "transport":
        desc.additional_constraints = "one of: " + ", ".join(TRANSPORTS)
    elif name == "dtype":
        desc.additional_constraints = "one of: " + ", ".join(DTYPES)
    return desc


def declare(node) -> None:
    """Declare every parameter with its descriptor; values come from overrides (YAML, -p) or defaults."""
    node.declare_parameters("", [(name, spec.default, descriptor(name, spec)) for name, spec in SPECS.items()])


@dataclass(frozen=True)
class Settings:
    """The parameter values as one consistent snapshot."""

    model_path: str
    device: str
    dtype: str
    max_question_chars: int
    prompt: str
    max_new_tokens_limit: int
    max_new_tokens: int
    describe_rate_hz: float
    image_topics: tuple
    transport: str
    stream_tokens: bool
    publish_annotated: bool
    max_image_pixels: int
    request_timeout_s: float
    torch_threads: int
    queue_size: int
    autostart: bool

    @classmethod
    def read(cls, node) -> "Settings":
        values = {f.name: node.get_parameter(f.name).value for f in fields(cls)}
        values["image_topics"] = tuple(values["image_topics"])
        return cls(**values)


def check(name: str, value: Any, others: Mapping[str, Any], check_model: bool = True) -> str | None:
    """Why `value` is not acceptable for parameter `name` (None if it is).

    `others` maps the other parameter names to the values they will have. check_model=False skips
    the checks that touch the file system or the accelerator (configure reports those).
    """
    if name == "model_path":
        if not value.strip():
            return "model_path is empty"
        return model_dir_problem(value) if check_model else None
    if name == "device":
        return device_problem(value, check_available=check_model)
    if name == "dtype" and value not in DTYPES:
        return f"dtype {value!r} is not one of {', '.join(DTYPES)}"
    if name == "transport" and value not in TRANSPORTS:
        return f"transport {value!r} is not one of {', '.join(TRANSPORTS)}"
    if name == "prompt":
        try:
            check_question(value, others.get("max_question_chars", SPECS["max_question_chars"].default), "prompt")
        except RequestError as err:
            return str(err)
    if name in ("max_new_tokens", "max_new_tokens_limit"):
        budget = value if name == "max_new_tokens" else others.get("max_new_tokens")
        limit = value if name == "max_new_tokens_limit" else others.get("max_new_tokens_limit")
        if budget is not None and limit is not None and budget > limit:
            return f"max_new_tokens ({budget}) must not exceed max_new_tokens_limit ({limit})"
    if name == "image_topics":
        return topics_problem(value)
    return None


def topics_problem(topics) -> str | None:
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    if not topics:
        return "image_topics is empty; give at least one camera topic"
    if len(set(topics)) != len(topics):
        return f"image_topics has duplicates: {list(topics)}"
    for topic in topics:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException as err:
            return f"image_topics entry {topic!r} is not a valid topic name: {err}"
    return None


def device_problem(device: str, check_available: bool = True) -> str | None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        return f"device {device!r} is not a torch device ({err})"
    if parsed.type not in ("cpu", "cuda"):
        return f"device {device!r}: only cpu and cuda are supported"
    if check_available and parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"device {device!r}: CUDA is not available on this machine"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"device {device!r}: there are only {torch.cuda.device_count()} CUDA devices"
    return None


# -- model_path ----------------------------------------------------------------------------------------------

def model_path_candidates(value: str) -> list[Path]:
    path = Path(value).expanduser()
    if path.is_absolute():
        return [path]
    from cobra_ros import paths

    candidates = [Path.cwd() / path]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("cobra_ros")) / path)
    except Exception:  # not installed through ament: no share directory
        pass
    candidates.append(Path(paths.__file__).resolve().parents[1] / path)
    if path == Path("models") / paths.BUNDLED_MODEL:
        candidates.append(paths.default_model_path())
    return list(dict.fromkeys(candidates))


def resolve_model_path(value: str) -> Path:
    """The first candidate directory that exists, else the first candidate (for the error message)."""
    candidates = model_path_candidates(value)
    return next((c for c in candidates if c.is_dir()), candidates[0])


def model_dir_problem(value: str) -> str | None:
    """A quick look (config.json, the weight files) that catches mistyped paths before a load starts."""
    from cobra_ros.model.checkpoint import CHECKPOINT, TOKENIZER_DIR, TOWER_FILES, CheckpointError, read_config

    candidates = model_path_candidates(value)
    path = resolve_model_path(value)
    if not path.is_dir():
        tried = ", ".join(str(c) for c in candidates)
        return f"model_path {value!r}: no such directory (looked in {tried})"
    try:
        read_config(path)
    except CheckpointError as err:
        return f"model_path {value!r}: {err}"
    for rel in (CHECKPOINT, *TOWER_FILES.values(), f"{TOKENIZER_DIR}/tokenizer.json"):
        if not (path / rel).is_file():
            return f"model_path {value!r}: {path / rel} is missing"
    return None
