"""cobra-train's recipes: phases chained as they say, one command writes the model with its
recipe, code version and figures, and a recipe that asks for what it cannot do is refused."""
import json

import pytest
import yaml

from cobra_ros.cli.train import parse_args, parse_overrides
from cobra_ros.train import recipe as R

TINY = {
    "name": "tiny",
    "data": {"train": [{"seed": 1, "scenes": 10, "n_blocks": [2, 4], "source": "2d",
                        "kind": "v2"}],
             "held_out": {"seed": 2, "scenes": 3, "source": "2d", "kind": "v2"}},
    "base": {"preset": "micro", "threads": 1, "scenes_per_step": 3, "questions_per_scene": 3,
             "warmup": 1, "first_steps": 0},
    "phases": [
        {"name": "towers", "steps": 0, "tower_steps": 2, "tower_batch": 4},
        {"name": "lm", "from": "towers-only", "steps": 3, "token_loss": 1.0},
        {"name": "more", "steps": 2, "places_loss": 1.0, "places_layer": 1},
    ],
    "eval": {"seed": 0, "scenes": 2},
}


def write(tmp_path, recipe):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_phases_chain_as_their_from_says(tmp_path):
    recipe = R.load_recipe(write(tmp_path, TINY))
    first = R.phase_config(recipe, 0, None)
    lm = R.phase_config(recipe, 1, "p0")
    more = R.phase_config(recipe, 2, "p1", {"lr": 0.5}, max_steps=1)
    assert (first.init_from, first.towers_from, first.tower_steps) == ("", "", 2)
    assert (lm.towers_from, lm.init_from, lm.token_loss, lm.preset) == ("p0", "", 1.0, "micro")
    assert (more.init_from, more.tower_steps, more.steps, more.lr) == ("p1", 0, 1, 0.5)
    # a continuation keeps its towers frozen unless its phase trains them on
    again = {**recipe, "phases": recipe["phases"] + [{"name": "towers again", "tower_steps": 3}]}
    retrained = R.phase_config(again, len(again["phases"]) - 1, "p2")
    assert (retrained.init_from, retrained.tower_steps) == ("p2", 3)


def test_one_command_writes_the_model_its_recipe_version_and_figures(tmp_path, capsys):
    from cobra_ros.cli.train import main

    import cobra_ros

    main(["--recipe", str(write(tmp_path, TINY)), "--out", str(tmp_path / "m")])
    out = tmp_path / "m"
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == TINY
    version = json.loads((out / "version.json").read_text())
    assert [p["name"] for p in version["phases"]] == ["towers", "lm", "more"]
    assert version["commit"] and len(version["commit"]) == 40
    assert (out / "loss.png").stat().st_size > 0 and (out / "eval.png").stat().st_size > 0
    figures = json.loads((out / "eval.json").read_text())
    assert figures["n_scenes"] == 2 and figures["n_questions"] > 0
    assert 0 <= figures["yes_no_accuracy"] <= 1
    assert "phase more" in capsys.readouterr().out
    # the last phase continued the one before: it has that phase's towers
    before = cobra_ros.load(R.phase_dir(out, 1, "lm")).model.vision.state_dict()
    after = cobra_ros.load(out).model.vision.state_dict()
    assert all((before[k] == after[k]).all() for k in before)
    # the config says what the model was taught (the 2-D drawing has no boxes: no locate)
    tasks = json.loads((out / "config.json").read_text())["cobra_ros"]["tasks"]
    assert {"yes_no", "describe", "count", "where"} <= set(tasks) and "locate" not in tasks


def test_the_model_records_the_recipe_and_code_it_started_with(tmp_path, monkeypatch):
    recipe = {**TINY, "phases": TINY["phases"][:2], "eval": {}}
    path = write(tmp_path, recipe)
    started = R.code_version()
    trained = R.train

    def edited_mid_run(*args, **kwargs):  # someone edits the recipe and commits during the run
        path.write_text(yaml.safe_dump({**recipe, "name": "edited"}))
        monkeypatch.setattr(R, "code_version", lambda: {"describe": "later", "commit": "0" * 40})
        return trained(*args, **kwargs)

    monkeypatch.setattr(R, "train", edited_mid_run)
    R.run_recipe(path, out=tmp_path / "m", evaluate=False)
    assert yaml.safe_load((tmp_path / "m" / "recipe.yaml").read_text()) == recipe
    version = json.loads((tmp_path / "m" / "version.json").read_text())
    assert version["commit"] == started["commit"]


def test_a_relation_left_out_is_not_trained_and_not_in_the_tasks(tmp_path):
    from cobra_ros.cli.train import main

    recipe = {**TINY, "phases": [TINY["phases"][0],
                                 {**TINY["phases"][1], "leave_out": "count,describe",
                                  "reword": True}], "eval": {}}
    main(["--recipe", str(write(tmp_path, recipe)), "--out", str(tmp_path / "m"), "--no-eval"])
    tasks = json.loads((tmp_path / "m" / "config.json").read_text())["cobra_ros"]["tasks"]
    assert "yes_no" in tasks and not {"count", "describe"} & set(tasks)


def test_start_from_continues_a_model_directory_and_a_missing_one_is_refused(tmp_path):
    from cobra_ros.cli.train import main

    import cobra_ros

    first = {**TINY, "phases": TINY["phases"][:2], "eval": {}}
    main(["--recipe", str(write(tmp_path, first)), "--out", str(tmp_path / "v1"), "--no-eval"])
    more = {**TINY, "start_from": str(tmp_path / "v1"), "phases": [{"name": "more", "steps": 2}]}
    assert R.phase_config(more, 0, more["start_from"]).init_from == str(tmp_path / "v1")
    R.run_recipe(write(tmp_path, more), out=tmp_path / "v2", evaluate=False)
    before = cobra_ros.load(tmp_path / "v1").model
    after = cobra_ros.load(tmp_path / "v2").model
    assert all((before.vision.state_dict()[k] == v).all()
               for k, v in after.vision.state_dict().items())
    assert any((before.llm.state_dict()[k] != v).any() for k, v in after.llm.state_dict().items())
    with pytest.raises(R.RecipeError, match="not a model directory"):
        R.run_recipe(write(tmp_path, {**more, "start_from": str(tmp_path / "none")}),
                     out=tmp_path / "v3")


def test_a_run_resumed_at_a_phase_makes_the_model_the_whole_run_makes(tmp_path):
    from cobra_ros.cli.train import main

    import cobra_ros

    path = write(tmp_path, {**TINY, "eval": {}})
    main(["--recipe", str(path), "--out", str(tmp_path / "whole"), "--no-eval"])
    # a run cut short in its last phase: the phases before it saved their models
    (tmp_path / "whole.phases").rename(tmp_path / "cut.phases")
    version = R.run_recipe(path, out=tmp_path / "cut", evaluate=False, from_phase="more")
    assert [p["name"] for p in version["phases"]] == ["more"]
    assert version["continued"] == str(R.phase_dir(tmp_path / "cut", 1, "lm"))
    whole = cobra_ros.load(tmp_path / "whole").model.state_dict()
    cut = cobra_ros.load(tmp_path / "cut").model.state_dict()
    assert whole.keys() == cut.keys() and all((whole[k] == cut[k]).all() for k in whole)
    with pytest.raises(R.RecipeError, match="phases are"):
        R.run_recipe(path, out=tmp_path / "cut", from_phase="tower")
    with pytest.raises(R.RecipeError, match="phase lm's model .* not a model directory"):
        R.run_recipe(path, out=tmp_path / "elsewhere", from_phase="more")


@pytest.mark.parametrize("change,message", [
    ({"phases": [{"name": "a", "steps": 1, "lerning_rate": 1}]}, "lerning_rate"),
    ({"phases": [{"name": "a", "init_from": "x"}]}, "init_from"),
    ({"phases": [{"name": "a"}, {"name": "a"}]}, "name of its own"),
    ({"phases": [{"name": "a", "from": "elsewhere"}]}, "from must be"),
    ({"colour": "red"}, "unknown recipe keys"),
    ({"data": {"train": [{"seed": 1, "scenes": 2, "shuffle": True}]}}, "unknown data keys"),
])
def test_a_recipe_that_asks_for_what_it_cannot_do_is_refused(tmp_path, change, message):
    with pytest.raises(R.RecipeError, match=message):
        R.load_recipe(write(tmp_path, {**TINY, **change}))


def test_set_overrides_take_each_field_in_its_own_type(tmp_path, capsys):
    assert parse_overrides(["memory_init=false", "lr=1", "projector=fused-ldpnet"]) == {
        "memory_init": False, "lr": 1.0, "projector": "fused-ldpnet"}
    for bad in (["memory_init=maybe"], ["steps=1.5"], ["no_such=1"], ["init_from=m"]):
        with pytest.raises(ValueError):
            parse_overrides(bad)
    path = write(tmp_path, TINY)
    with pytest.raises(SystemExit):  # the preset's projector does not pool
        parse_args(["--recipe", str(path), "--set", "ldp_grid=2"])
    assert "add projector: fused-ldpnet" in capsys.readouterr().err


def test_the_repository_recipes_load_and_every_phase_checks():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("recipes/*.yaml")):
        recipe = R.load_recipe(path)
        for i in range(len(recipe["phases"])):
            R.phase_config(recipe, i, "previous" if i else recipe.get("start_from"))
        if "start_from" in recipe:  # what it continues ships beside it
            assert (path.parents[1] / recipe["start_from"] / "config.json").is_file(), path


def test_scene_sets_rendered_by_several_processes_are_the_ones_one_process_renders(tmp_path):
    recipe = {**TINY, "cache_dir": str(tmp_path / "cache"),
              "data": {"train": [*TINY["data"]["train"], {"seed": 3, "scenes": 4, "kind": "v2",
                                                          "source": "2d"}],
                       "held_out": TINY["data"]["held_out"]}}
    together, held_together = R.build_data(recipe, workers=2, log=lambda _: None)
    assert len(list((tmp_path / "cache").iterdir())) == 3  # each set rendered into the cache
    alone, held_alone = R.build_data({**recipe, "cache_dir": None}, log=lambda _: None)
    for a, b in ((together, alone), (held_together, held_alone)):
        assert (a.images == b.images).all() and a.examples == b.examples

