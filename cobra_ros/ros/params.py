"""Node parameters, declared once: each `Spec` holds the default, the description, the range or the
choices, and the rule its value must pass.

From SPECS come the descriptors the cobra node declares, the `Settings` snapshot it reads them
into, and the checks its on-set-parameters callback runs; config/cobra.yaml is checked against
SPECS by test/test_ros_params.py. The replay node declares its own specs with the same helpers.
"""
from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from cobra_ros.model.scoring import SCORING_HELP, SCORINGS
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT
from cobra_ros.ros.image_conversion import DEFAULT_MAX_PIXELS
from cobra_ros.ros.requests import RequestError, check_question

TRANSPORTS = ("raw", "compressed")
MAX_WATCHED = 64  # standing questions (and, separately, expressions) per frame
# The Language-Table camera in the board frame (language_table/environments/constants.py): its
# optical frame is the fixed-axis XYZ rotation (pi/5, pi, -pi/2) of the board's axes.
LANGTABLE_CAMERA_XYZ = [0.75, 0.0, 0.5]
LANGTABLE_CAMERA_RPY = [0.6283185307179586, 3.141592653589793, -1.5707963267948966]
MODEL_PARAMETERS = ("model_path", "device", "dtype")  # a change reconfigures the node

# A rule: (value, every parameter's value with this one applied, whether to look at the file
# system and the accelerator) -> why the value is refused, or None.
Rule = Callable[[Any, Mapping[str, Any], bool], "str | None"]


@dataclass(frozen=True)
class Spec:
    default: Any
    description: str
    range: tuple | None = None
    choices: tuple | Callable[[], tuple] | None = None  # a callable is asked when first needed
    read_only: bool = False
    rule: Rule | None = None
    dynamic_typing: bool = False  # an empty list default has no type of its own in rclpy


def _dtypes() -> tuple:
    from cobra_ros.model.engine import DTYPES  # the model core's list; importing it loads torch

    return tuple(DTYPES)


def _model_path(value, values, deep):
    if not value.strip():
        return "model_path is empty"
    return model_dir_problem(value) if deep else None


def _prompt(value, values, deep):
    try:
        check_question(value, values["max_question_chars"], "prompt")
    except RequestError as err:
        return str(err)
    return None


def _budget(value, values, deep):
    budget, limit = values["max_new_tokens"], values["max_new_tokens_limit"]
    if budget > limit:
        return f"max_new_tokens ({budget}) must not exceed max_new_tokens_limit ({limit})"
    return None


def texts_problem(value, max_chars: int, what: str) -> str | None:
    """Why a list of standing questions or expressions is refused (None if it is not)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return f"{what} must be a list of strings, got {value!r}"
    if len(value) > MAX_WATCHED:
        return f"{what} has {len(value)} entries; at most {MAX_WATCHED}"
    for text in value:
        try:
            check_question(text, max_chars, what[:-1])
        except RequestError as err:
            return f"{what} entry {text!r}: {err}"
        if what == "watch_expressions" and '"' in text:
            return f"{what} entry {text!r}: the grounding prompt quotes it; no double quotes"
    return None


def _texts(what):
    return lambda value, values, deep: texts_problem(value, values["max_question_chars"], what)


def _camera_name(what):
    def rule(value, values, deep):
        if value and value not in values["image_topics"]:
            return f"{what} {value!r} is not one of image_topics {list(values['image_topics'])}"
        return None
    return rule


def _vector(what):
    def rule(value, values, deep):
        import math

        if len(value) != 3 or not all(math.isfinite(v) for v in value):
            return f"{what} must be 3 finite numbers, got {list(value)}"
        return None
    return rule


SPECS: dict[str, Spec] = {
    "model_path": Spec(
        "models/langtable-tiny",
        "Cobra model directory (release layout). A relative path is looked up in the working "
        "directory, the package share directory, then the source tree. Set at run time, the node "
        "reconfigures (cleanup, configure); a model that fails to load is refused, the value "
        "reverts and the old model is loaded again.", rule=_model_path),
    "device": Spec("cpu", "torch device: cpu, cuda or cuda:N; a change reconfigures the node",
                   rule=lambda value, values, deep: device_problem(value, check_available=deep)),
    "dtype": Spec("float32", "weights dtype; a change reconfigures the node", choices=_dtypes),
    "scoring": Spec("plain", SCORING_HELP + "; ~/ask_yes_no answers P(yes) (P(True) for vsr)",
                    choices=tuple(SCORINGS)),
    "max_question_chars": Spec(2000, "longest question (and prompt) accepted, in characters; "
                                     "longer ones are refused, never truncated", (1, 1_000_000)),
    "prompt": Spec(DESCRIBE_PROMPT, "prompt of the periodic descriptions and of Describe goals "
                                    "without one", rule=_prompt),
    "max_new_tokens_limit": Spec(256, "upper bound on max_new_tokens of any request", (1, 8192),
                                 rule=_budget),
    "max_new_tokens": Spec(64, "generation budget of descriptions and of requests that ask for 0 "
                               "(at most max_new_tokens_limit)", (1, 8192), rule=_budget),
    "describe_rate_hz": Spec(1.0, "rate of descriptions published on ~/description (node clock, "
                                  "so sim time when use_sim_time); 0 = off. Never faster than the "
                                  "model or the camera.", (0.0, 100.0)),
    "image_topics": Spec(["image"], "camera topics (relative names follow the namespace and "
                                    "remappings); the first is the default camera of requests",
                         rule=lambda value, values, deep: topics_problem(value)),
    "transport": Spec("raw", "raw: sensor_msgs/Image on <topic>; compressed: "
                             "sensor_msgs/CompressedImage on <topic>/compressed",
                      choices=TRANSPORTS),
    "stream_tokens": Spec(False, "publish the text so far on ~/description/stream after every "
                                 "token"),
    "publish_annotated": Spec(False, "publish the frame with the latest description or answer "
                                     "drawn on it on ~/annotated"),
    "max_image_pixels": Spec(DEFAULT_MAX_PIXELS, "larger frames are rejected (width x height)",
                             (1, 1 << 31)),
    "request_timeout_s": Spec(30.0, "a request that waits longer than this for the model is "
                                    "answered with an error (and its generation stopped)",
                              (0.1, 3600.0)),
    "torch_threads": Spec(0, "CPU threads torch may use (set at configure); 0 = torch's default, "
                             "one per core. Fewer leave cores to the rest of the robot",
                          (0, 1024)),
    "watch_questions": Spec([], "standing yes/no questions: answered as P(yes) on every encoded "
                                "frame of watch_camera and published on ~/watch/result; the "
                                "~/watch service sets them at run time", rule=_texts(
                                    "watch_questions"), dynamic_typing=True),
    "watch_expressions": Spec([], "standing referring expressions, located on every encoded frame "
                                  "of watch_camera (~/watch/result)", rule=_texts(
                                      "watch_expressions"), dynamic_typing=True),
    "watch_camera": Spec("", "the image_topics entry the standing questions follow; empty = the "
                             "first", rule=_camera_name("watch_camera")),
    "camera_info_topic": Spec("camera_info", "sensor_msgs/CameraInfo of calibrated_camera; with "
                                             "it, ~/locate and ~/watch/result also give the point "
                                             "on the table. Empty = no calibration"),
    "calibrated_camera": Spec("", "the image_topics entry camera_info_topic and camera_xyz / "
                                  "camera_rpy describe; empty = the first",
                              rule=_camera_name("calibrated_camera")),
    "camera_xyz": Spec(LANGTABLE_CAMERA_XYZ, "camera optical frame origin in board_frame, metres "
                                             "(default: the Language-Table camera)",
                       rule=_vector("camera_xyz")),
    "camera_rpy": Spec(LANGTABLE_CAMERA_RPY, "camera optical frame orientation in board_frame: "
                                             "fixed-axis roll, pitch, yaw in radians (default: "
                                             "the Language-Table camera)",
                       rule=_vector("camera_rpy")),
    "board_frame": Spec("world", "frame_id of the table points (the plane z = 0 is the table)"),
    "batch_yes_no": Spec(True, "answer ~/ask_yes_no requests that wait for the same camera "
                               "together: one batched prefill on the camera's newest frame "
                               "(false: one request at a time)"),
    "queue_size": Spec(8, "requests that may wait for the model; further ones are refused as "
                          "busy", (1, 256), read_only=True),
    "autostart": Spec(True, "configure and activate the lifecycle node at start-up",
                      read_only=True),
}


def choices(spec: Spec) -> tuple | None:
    return spec.choices() if callable(spec.choices) else spec.choices


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only,
                               dynamic_typing=spec.dynamic_typing)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        else:
            desc.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if spec.choices is not None:
        desc.additional_constraints = "one of: " + ", ".join(choices(spec))
    return desc


def declare(node, specs: Mapping[str, Spec] = SPECS) -> None:
    """Declare every parameter with its descriptor; values come from overrides (YAML, -p) or
    the defaults. rclpy enforces types, ranges and read_only; `check` the rest."""
    node.declare_parameters("", [(name, spec.default, descriptor(name, spec))
                                 for name, spec in specs.items()])


def values(node, specs: Mapping[str, Spec] = SPECS) -> dict[str, Any]:
    return {name: node.get_parameter(name).value for name in specs}


def check(name: str, value: Any, others: Mapping[str, Any], check_model: bool = True,
          specs: Mapping[str, Spec] = SPECS) -> str | None:
    """Why `value` is not acceptable for parameter `name` (None if it is).

    `others` maps other parameter names to the values they will have; those missing take their
    defaults. check_model=False skips the rules that look at the file system or the accelerator
    (configure reports those).
    """
    spec = specs[name]
    allowed = choices(spec)
    if allowed is not None and value not in allowed:
        return f"{name} {value!r} is not one of {', '.join(allowed)}"
    if spec.rule is None:
        return None
    every = {**{n: s.default for n, s in specs.items()}, **others, name: value}
    return spec.rule(value, every, check_model)


def problems(current: Mapping[str, Any], specs: Mapping[str, Spec] = SPECS,
             check_model: bool = True) -> list[str]:
    """Every reason a complete set of values is refused (a node checks its overrides with it)."""
    found = (check(name, current[name], current, check_model, specs) for name in specs)
    return [problem for problem in dict.fromkeys(found) if problem]


def _read(cls, node) -> "Settings":
    current = values(node)
    for name, spec in SPECS.items():
        if isinstance(spec.default, list):  # a YAML `[]` arrives without a type, as None
            current[name] = tuple(current[name] or ())
    return cls(**current)


# One frozen snapshot of the cobra node's parameters, a field per spec, made from SPECS.
Settings = make_dataclass(
    "Settings", [(name, tuple if isinstance(spec.default, list) else type(spec.default))
                 for name, spec in SPECS.items()],
    frozen=True, namespace={"read": classmethod(_read), "__module__": __name__})


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


# -- model_path ----------------------------------------------------------------------------------

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
    """The first candidate directory that exists, else the first candidate (for the message)."""
    candidates = model_path_candidates(value)
    return next((c for c in candidates if c.is_dir()), candidates[0])


def model_dir_problem(value: str) -> str | None:
    """A quick look (config.json, the weight files) that catches mistyped paths before a load."""
    from cobra_ros.model.checkpoint import (CHECKPOINT, TOKENIZER_DIR, TOWER_FILES,
                                            CheckpointError, read_config)

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
