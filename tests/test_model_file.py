"""hvpl.engine.model_file: the entries of a model_final.pth, reading one and rebuilding its model."""
from __future__ import annotations

import pytest
import torch

from hvpl.config import load_run_config
from hvpl.continual.methods import get_method
from hvpl.engine import step_plan
from hvpl.engine.model_file import FINAL_NAME, REQUIRED_KEYS, load_model_file, model_file_dict, rebuild_model
from hvpl.utils.errors import HVPLError
from model_files import save_first_steps

SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6"]


@pytest.fixture(scope="module")
def models(tiny_split_dir, tmp_path_factory):
    cfg = load_run_config("synth_smoke", "hvpl", None, SMALL)
    return save_first_steps(cfg, tiny_split_dir, tmp_path_factory.mktemp("model_files"))


def test_model_file_dict_holds_a_copy_of_the_weights_and_the_plan(tiny_split_dir, tmp_path):
    cfg = load_run_config("synth_smoke", "eclipse", None, SMALL)
    plan, _ = step_plan.plan_step(cfg, 0, tiny_split_dir / "train_step0.json", None, seed=0)
    model = step_plan.build_step_model(cfg, plan, None)
    entries = model_file_dict(cfg, plan, model)
    assert tuple(entries) == REQUIRED_KEYS
    assert (entries["method"], entries["step"], entries["classes_per_task"], entries["class_order"]) == (
        "eclipse", 0, [2], [1, 2])
    assert entries["model_config"] is cfg["model"] and entries["scenario"] is cfg["scenario"]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.frame_decoder.query_feat.weight.add_(1.0)   # training after the dict was made does not reach it
    torch.save(entries, tmp_path / FINAL_NAME)
    rebuilt = rebuild_model(load_model_file(tmp_path / FINAL_NAME)).state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in saved.items())
    assert not torch.equal(rebuilt["frame_decoder.query_feat.weight"], model.frame_decoder.query_feat.weight)


def test_model_file_errors(models, tmp_path):
    with pytest.raises(HVPLError, match="not found"):
        load_model_file(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(HVPLError, match="junk.pth"):
        load_model_file(tmp_path / "junk.pth")
    torch.save({"model": {}}, tmp_path / "partial.pth")
    with pytest.raises(HVPLError, match="missing entries"):
        load_model_file(tmp_path / "partial.pth")
    ckpt = load_model_file(models[1])
    ckpt["classes_per_task"] = [2, 2, 2]
    with pytest.raises(HVPLError, match="do not match"):
        rebuild_model(ckpt)


def test_rebuild_as_another_method_of_the_same_base(models):
    ckpt = load_model_file(models[0])
    for method in ("eclipse", "hvpl_no_ogc", "finetune", get_method("eclipse")):
        model = rebuild_model(ckpt, method)
        assert model.method is get_method(method)
        own = model.state_dict()
        assert all(torch.equal(own[k], v) for k, v in ckpt["model"].items())


def test_rebuild_refuses_another_base_variant_or_a_later_step(models):
    with pytest.raises(HVPLError, match="cannot continue as 'hvpl_no_context'"):
        rebuild_model(load_model_file(models[0]), "hvpl_no_context")
    with pytest.raises(HVPLError, match="step-1 'hvpl' model cannot continue as 'eclipse'"):
        rebuild_model(load_model_file(models[1]), "eclipse")


def test_rebuilt_model_computes_what_the_saved_one_did(models):
    """Weights of every group round-trip (prompts perturbed so that they matter); the last group trains."""
    ckpt = load_model_file(models[1])
    model = rebuild_model(ckpt)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.frame_decoder.prompts.parameters():
            p.add_(torch.randn_like(p))
    rebuilt = rebuild_model(dict(ckpt, model=model.state_dict()))
    assert rebuilt.train_group == 1
    model.eval(), rebuilt.eval()
    video = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    out, again = model.forward_video(video), rebuilt.forward_video(video)
    assert [r["task"] for r in again] == [0, 1]
    for a, b in zip(out, again):
        assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_masks"], b["pred_masks"])
    assert not torch.equal(out[1]["pred_logits"], rebuild_model(ckpt).eval().forward_video(video)[1]["pred_logits"])
    with pytest.raises(HVPLError, match="scenario.prompts_per_task"):
        rebuild_model(dict(ckpt, scenario={}))
