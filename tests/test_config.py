"""hvpl.config: scenario/model files, --set overrides with kind checks, value ranges of a scenario."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from hvpl.config import config_dir, load_run_config, load_scenario
from hvpl.utils.errors import HVPLError


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "scenarios").glob("*.yaml")))
def test_every_shipped_scenario_passes_the_checks(name):
    assert load_run_config(name)["scenario"]["name"] == name


def test_overrides_keep_the_kind_of_the_value():
    cfg = load_run_config("synth_smoke", "hvpl", None, [
        "scenario.train.lr=1",                      # an integer where a float is
        "scenario.train.init_weights=/w.pth",       # null -> a string (optional keys)
        "scenario.train.clip_grad=null",            # a value -> null
        "scenario.logit_deltas=[0.1, -0.2]",
        "model.loss.num_points=64"])
    assert cfg["scenario"]["train"]["lr"] == 1 and cfg["scenario"]["train"]["init_weights"] == "/w.pth"
    assert cfg["scenario"]["train"]["clip_grad"] is None and cfg["model"]["loss"]["num_points"] == 64


@pytest.mark.parametrize("item, message", [
    ("scenario.train.lr=abc", "expected a number"),
    ("scenario.train.step0_iters=abc", "expected an integer"),
    ("scenario.train.step0_iters=2.5", "expected an integer"),
    ("scenario.base=abc", "expected an integer"),
    ("scenario.data.use_coco=1", "expected true/false"),
    ("scenario.input.min_size_train=64", "expected a list"),
    ("scenario.train=3", "expected a mapping"),
    ("scenario.train.inc_iter=3", "unknown key 'inc_iter'"),
    ("scenario.train.lr", "expected KEY=VALUE"),
])
def test_overrides_of_another_kind_or_unknown_keys_are_errors(item, message):
    with pytest.raises(HVPLError, match=message) as exc:
        load_run_config("synth_smoke", "hvpl", None, [item])
    assert item.split("=")[0] in str(exc.value)


@pytest.mark.parametrize("item, key", [
    ("scenario.train.step0_iters=-5", "train.step0_iters"),
    ("scenario.train.inc_iters=0", "train.inc_iters"),
    ("scenario.train.batch_size=0", "train.batch_size"),
    ("scenario.train.lr=0", "train.lr"),
    ("scenario.train.weight_decay=-0.1", "train.weight_decay"),
    ("scenario.train.ogc_threshold=1.5", "train.ogc_threshold"),
    ("scenario.train.clip_grad=0", "train.clip_grad"),
    ("scenario.prompts_per_task=0", "prompts_per_task"),
    ("scenario.detections_per_video=0", "detections_per_video"),
    ("scenario.logit_deltas=[0.4, abc]", "logit_deltas"),
    ("scenario.base=5", "multiple of increment"),
    ("scenario.logit_deltas=[]", "logit_deltas = \\[\\]: expected a non-empty list"),
    ("scenario.input.min_size_train=[]", "input.min_size_train = \\[\\]: expected a non-empty list of integers"),
    ("scenario.input.min_size_train=[64, 0]", "input.min_size_train"),
    ("scenario.input.max_size_test=0", "input.max_size_test"),
    ("model.loss.num_points=-4", "loss.num_points = -4: expected an integer >= 1"),
    ("model.frame_decoder.num_queries=0", "frame_decoder.num_queries = 0"),
    ("model.video_decoder.tree_scan.d_state=0", "video_decoder.tree_scan.d_state"),
    ("model.loss.importance_sample_ratio=1.5", "loss.importance_sample_ratio = 1.5: expected a number in \\[0, 1\\]"),
])
def test_values_out_of_range_are_errors_naming_the_key(item, key):
    """Caught at loading (also model sizes), not as a tensor-shape error deep in the first iteration."""
    with pytest.raises(HVPLError, match=key) as exc:
        load_run_config("synth_smoke", "hvpl", None, [item])
    assert ("model 'tiny'" if item.startswith("model.") else "synth_smoke") in str(exc.value)


def test_a_model_file_out_of_range_names_the_file(tmp_path):
    model = yaml.safe_load((config_dir() / "models" / "tiny.yaml").read_text())
    model["hidden_dim"] = 0
    path = tmp_path / "bad_model.yaml"
    path.write_text(yaml.safe_dump(model))
    with pytest.raises(HVPLError, match=f"{path}: hidden_dim = 0"):
        load_run_config("synth_smoke", "hvpl", str(path))


def test_a_scenario_file_out_of_range_names_the_file(tmp_path):
    scenario = yaml.safe_load((config_dir() / "scenarios" / "synth_smoke.yaml").read_text())
    scenario["train"]["frames_inc"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(scenario))
    with pytest.raises(HVPLError, match=f"{path}: train.frames_inc = 0: expected an integer >= 1"):
        load_scenario(str(path))


def test_cli_reports_a_bad_override_in_one_line():
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "params", "--scenario", "synth_smoke", "--step", "0",
                          "--set", "scenario.train.lr=abc"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: --set scenario.train.lr='abc'")


def test_cli_reports_a_model_config_that_cannot_be_built():
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "params", "--scenario", "synth_smoke", "--step", "0",
                          "--set", "model.hidden_dim=7"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "model config 'tiny' cannot be built: ValueError: num_channels (7)" in res.stderr


def test_a_scenario_name_must_be_its_file_name(tmp_path):
    """Results, split files and checkpoints are named after `name`: a copied file keeping the old name is refused."""
    scenario = yaml.safe_load((config_dir() / "scenarios" / "synth_smoke.yaml").read_text())
    path = tmp_path / "synth_3-3.yaml"
    path.write_text(yaml.safe_dump(scenario))
    with pytest.raises(HVPLError, match=r"synth_3-3.yaml: entry 'name' is 'synth_smoke'; it must be the file name"):
        load_scenario(str(path))


def test_own_config_folder_adds_to_the_shipped_one(tmp_path, monkeypatch):
    """$HVPL_CONFIG_DIR with only a scenario of one's own still finds the shipped models and scenarios."""
    scenario = yaml.safe_load((config_dir() / "scenarios" / "synth_smoke.yaml").read_text())
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "mine.yaml").write_text(yaml.safe_dump(dict(scenario, name="mine")))
    monkeypatch.setenv("HVPL_CONFIG_DIR", str(tmp_path))
    assert load_run_config("mine")["model"]["name"] == "tiny"
    assert load_run_config("synth_4-2")["scenario"]["name"] == "synth_4-2"
    with pytest.raises(HVPLError, match=r"unknown scenario 'nope'.*known: .*mine.*synth_smoke"):
        load_run_config("nope")


def test_exponent_without_a_dot_is_a_number():
    """PyYAML reads 1e-4 as a string; where a number is expected it is taken as one."""
    cfg = load_run_config("synth_smoke", "hvpl", None, ["scenario.train.lr=1e-4"])
    assert cfg["scenario"]["train"]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("content, message", [
    (b"name: x\ntrain: [1,\n  lr: 2\n", r"bad.yaml: invalid YAML: .* \(line \d+, column \d+\)$"),
    (b"name: \xff\xfe\n", r"bad.yaml: invalid YAML \(not UTF-8 text: byte 0xff at offset 6\)"),
])
def test_a_scenario_file_that_is_not_yaml_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(HVPLError, match=message):
        load_scenario(str(path))


def test_a_set_value_that_is_not_yaml_is_one_line():
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "params", "--scenario", "synth_smoke", "--step", "0",
                          "--set", "scenario.train.lr=[1,"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: --set scenario.train.lr=[1,: the value is not valid YAML: expected the "
                                 "node content, but found '<stream end>' (line 1, column 4)")


def _scenario_file(tmp_path, edit, name="synth_smoke"):
    scenario = yaml.safe_load((config_dir() / "scenarios" / f"{name}.yaml").read_text())
    edit(scenario)
    path = tmp_path / "scenarios" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(scenario))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(class_order=[1, 2, 3, 4, 5, 5]),
     r"class_order = \[1, 2, 3, 4, 5, 5\]: expected null or a non-empty list of distinct integers"),
    (lambda s: s.update(class_order=[1, 2, 3]), "class_order lists 3 category ids, num_classes is 6"),
    (lambda s: s.update(class_order=["a", 1, 2, 3, 4, 5]), r"class_order = \['a', 1, 2, 3, 4, 5\]: expected null"),
    (lambda s: s.update(class_order=[1.0, 2, 3, 4, 5, 6]), r"class_order = \[1.0, 2, 3, 4, 5, 6\]: expected null"),
    (lambda s: s.update(train=None), "train = None: expected a mapping"),
    (lambda s: s["train"].pop("lr"), r"train: missing keys \['lr'\]"),
    (lambda s: s.pop("input"), r"missing keys \['input'\]"),
    (lambda s: s["train"].update(inc_iter=5), r"train: unknown keys \['inc_iter'\] \(known: step0_iters,"),
    (lambda s: s.update(bogus=1), r"unknown keys \['bogus'\]"),
    (lambda s: s["train"].update(step0_iters=20.0), "train.step0_iters = 20.0: expected an integer >= 1"),
    (lambda s: s["train"].update(lr="1e-4"), "train.lr = '1e-4': expected a number > 0 \\(YAML 1.1 reads an exponent"),
    (lambda s: s["data"].update(use_coco="no"), "data.use_coco = 'no': expected true/false"),
    (lambda s: s["split"].update(test_ratio=1), r"split.test_ratio = 1: expected a number in \(0, 1\)"),
    (lambda s: s["synthetic"].update(height=8), "synthetic.height = 8: expected an integer >= 16"),
    (lambda s: s["input"].update(crop=[64]), r"input.crop = \[64\]: expected null or a list of 2 integers >= 1"),
    (lambda s: s.update(name=None), "name = None: expected a string"),
])
def test_a_scenario_file_is_checked_against_its_schema(tmp_path, edit, message):
    """Every key named with the file, in one line (not a TypeError later, not a schema dump)."""
    path = _scenario_file(tmp_path, edit)
    with pytest.raises(HVPLError, match=f"^{path}: {message}") as exc:
        load_scenario(str(path))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(loss=None), "loss = None: expected a mapping"),
    (lambda m: m["backbone"].update(type="vit"), "backbone.type = 'vit': expected one of tiny, resnet50"),
    (lambda m: m["backbone"].update(channels=[16, 32]), r"backbone.channels = \[16, 32\]: expected a list of 4"),
    (lambda m: m["video_decoder"].pop("tree_scan"), r"video_decoder: missing keys \['tree_scan'\]"),
    (lambda m: m["frame_decoder"].update(num_querys=4), r"frame_decoder: unknown keys \['num_querys'\]"),
    (lambda m: m.update(hidden_dim=True), "hidden_dim = True: expected an integer >= 1"),
])
def test_a_model_file_is_checked_against_its_schema(tmp_path, edit, message):
    model = yaml.safe_load((config_dir() / "models" / "tiny.yaml").read_text())
    edit(model)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(model))
    with pytest.raises(HVPLError, match=f"^{path}: {message}"):
        load_run_config("synth_smoke", "hvpl", str(path))


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "models").glob("*.yaml")))
def test_every_shipped_model_passes_the_schema(name):
    assert load_run_config("synth_smoke", "hvpl", name)["model"]["name"] == name


def test_cli_names_the_scenario_file_and_key(tmp_path):
    path = _scenario_file(tmp_path, lambda s: s.update(train=None))
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "params", "--scenario", str(path), "--step", "0"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr == f"error: {path}: train = None: expected a mapping\n"
