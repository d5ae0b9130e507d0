"""Node parameters: config/cobra.yaml matches the declarations, and each rule refuses with a
reason."""

import re
import shutil
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import ParameterDescriptor

from cobra_ros.model.checkpoint import CHECKPOINT
from cobra_ros.paths import default_model_path
from cobra_ros.ros import params

ROOT = Path(__file__).resolve().parents[1]


def test_the_yaml_holds_every_parameter_with_its_declared_default():
    yaml_params = yaml.safe_load((ROOT / "config" / "cobra.yaml").read_text())["/**"][
        "ros__parameters"
    ]
    assert set(yaml_params) == set(params.SPECS)
    for name, spec in params.SPECS.items():
        assert (yaml_params[name], type(yaml_params[name])) == (
            spec.default,
            type(spec.default),
        ), name


def test_descriptors_carry_description_range_and_read_only():
    for name, spec in params.SPECS.items():
        desc = params.descriptor(name, spec)
        assert isinstance(desc, ParameterDescriptor) and len(desc.description) > 20, name
        assert desc.read_only == spec.read_only
        if spec.range is not None:
            (bounds,) = desc.floating_point_range or desc.integer_range
            assert (
                bounds.from_value,
                bounds.to_value,
            ) == spec.range and bounds.from_value <= spec.default
    assert params.descriptor(
        "describe_rate_hz", params.SPECS["describe_rate_hz"]
    ).floating_point_range
    assert params.descriptor("queue_size", params.SPECS["queue_size"]).read_only


@pytest.mark.parametrize(
    "name, value, others, reason",
    [
        ("transport", "udp", {}, "transport 'udp' is not one of raw, compressed"),
        ("dtype", "int4", {}, "dtype 'int4' is not one of"),
        ("device", "tpu:0", {}, "device 'tpu:0'"),
        ("device", "meta", {}, "only cpu and cuda"),
        ("prompt", "", {"max_question_chars": 100}, "prompt is empty"),
        ("prompt", "x" * 101, {"max_question_chars": 100}, "prompt is 101 characters long"),
        (
            "max_new_tokens",
            300,
            {"max_new_tokens_limit": 256},
            r"max_new_tokens \(300\) must not exceed",
        ),
        (
            "max_new_tokens_limit",
            10,
            {"max_new_tokens": 64},
            r"max_new_tokens \(64\) must not exceed",
        ),
        ("image_topics", [], {}, "image_topics is empty"),
        ("image_topics", ["image", "image"], {}, "duplicates"),
        ("image_topics", ["camera/1image"], {}, "not a valid topic name"),
        ("model_path", " ", {}, "model_path is empty"),
        ("watch_questions", ["Is it red?", ""], {}, "watch_questions entry '': .*empty"),
        ("watch_questions", ["x" * 30], {"max_question_chars": 20}, "30 characters long"),
        ("watch_questions", ["q?"] * 65, {}, "65 entries; at most 64"),
        ("watch_questions", [1, 2], {}, "must be a list of strings"),
        ("watch_expressions", ['the "red" moon'], {}, "no double quotes"),
        ("watch_camera", "wrist", {"image_topics": ["image"]}, "not one of image_topics"),
        ("calibrated_camera", "wrist", {"image_topics": ["image"]}, "not one of image_topics"),
        ("camera_xyz", [0.1, 0.2], {}, "3 finite numbers"),
        ("camera_rpy", [0.0, float("nan"), 0.0], {}, "3 finite numbers"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name, value, others, reason):
    problem = params.check(name, value, others)
    assert problem is not None and re.search(reason, problem), problem


def test_good_values_pass():
    assert params.check("transport", "compressed", {}) is None
    assert params.check("device", "cpu", {}) is None
    assert (
        params.check("image_topics", ["image", "wrist/image", "/abs/image", "~/private"], {})
        is None
    )
    assert params.check("max_new_tokens", 256, {"max_new_tokens_limit": 256}) is None
    assert params.check("watch_questions", ["Is the red moon left of the star?"], {}) is None
    assert params.check("watch_expressions", None, {}) is None  # a YAML `[]`: no type, None
    assert params.check("watch_camera", "wrist", {"image_topics": ["image", "wrist"]}) is None


def test_model_directories_are_checked_before_a_load(tiny_model_dir, tmp_path, monkeypatch):
    assert params.model_dir_problem(str(tiny_model_dir)) is None
    assert "no such directory" in params.model_dir_problem(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in params.model_dir_problem(str(empty))
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / CHECKPOINT).unlink()
    assert f"{broken / CHECKPOINT} is missing" in params.model_dir_problem(str(broken))
    # relative paths: the working directory first
    monkeypatch.chdir(tiny_model_dir.parent)
    assert params.resolve_model_path(tiny_model_dir.name) == tiny_model_dir
    assert params.model_dir_problem(tiny_model_dir.name) is None


def test_the_default_model_path_resolves_to_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    candidates = params.model_path_candidates(params.SPECS["model_path"].default)
    assert candidates[0] == tmp_path / "models" / "langtable-tiny"  # a user's own copy wins
    assert ROOT / "models" / "langtable-tiny" in candidates and default_model_path() in candidates
    bundled = tmp_path / "checkout" / "models" / "langtable-tiny"
    bundled.mkdir(parents=True)
    monkeypatch.setattr(
        params, "model_path_candidates", lambda value: [tmp_path / "missing", bundled]
    )
    assert params.resolve_model_path("models/langtable-tiny") == bundled


def test_dtype_choices_are_the_model_cores_list():
    from cobra_ros.model.engine import DTYPES

    desc = params.descriptor("dtype", params.SPECS["dtype"])
    assert desc.additional_constraints == "one of: " + ", ".join(DTYPES)
    assert all(params.check("dtype", name, {}) is None for name in DTYPES)


def test_settings_have_a_field_per_declared_parameter():
    from dataclasses import fields

    assert [f.name for f in fields(params.Settings)] == list(params.SPECS)


def test_the_replay_node_declares_its_parameters_with_the_same_helpers():
    from cobra_ros.ros import replay_node

    for name, spec in replay_node.SPECS.items():
        desc = params.descriptor(name, spec)
        assert desc.read_only and desc.description, name
    assert (
        params.descriptor("transport", replay_node.SPECS["transport"]).additional_constraints
        == "one of: raw, compressed"
    )
    defaults = {name: spec.default for name, spec in replay_node.SPECS.items()}
    assert params.problems(defaults, replay_node.SPECS) == []
    bad = {**defaults, "rate_mode": "slow", "transport": "udp"}
    assert params.problems(bad, replay_node.SPECS) == [
        "rate_mode 'slow' is not one of recorded, fixed, fast",
        "transport 'udp' is not one of raw, compressed",
    ]
