"""Tests for hvpl.continual.growth: growth init rules, trainable sets per method, parameter counts."""
from pathlib import Path

import pytest
import torch
import yaml

from hvpl.config import load_run_config
from hvpl.continual.growth import count_parameters, count_trainable, grow_for_step, set_trainable
from hvpl.model.hvpl import HVPLModel
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "models"


def tiny_cfg():
    return yaml.safe_load((CONFIG / "tiny.yaml").read_text())


def mlp_params(dims):
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def expected_prompt_trainable(model_cfg, method, prompts, increment):
    """Independent count of method.md Section 3's trainable set from the config sizes."""
    c, n_cls = model_cfg["hidden_dim"], model_cfg["classifier_layers"]
    fd, vd = model_cfg["frame_decoder"], model_cfg["video_decoder"]
    hidden = [c] * n_cls
    heads = 2 * (mlp_params(hidden + [increment]) + mlp_params(hidden + [1]))
    mask_mlp = mlp_params([c] * (fd["mask_mlp_layers"] + 1))
    frame_group = prompts * c * (1 + fd["num_layers"]) + mask_mlp
    video_group = prompts * c * (1 + vd["dec_layers"] + 1) + mask_mlp
    return heads + frame_group + (video_group if method == "hvpl" else 0)


@pytest.mark.parametrize("scenario,expected", [("ytvis2019_20-2", 941_830), ("ytvis2019_20-5", 962_572)])
def test_paper_trainable_counts(scenario, expected):
    cfg = load_run_config(scenario, "hvpl")
    sc = cfg["scenario"]
    assert expected == 921_602 + 514 * sc["increment"] + 3_840 * sc["prompts_per_task"]
    last = (sc["num_classes"] - sc["base"]) // sc["increment"]
    for step in (1, last):
        trainable, total = count_parameters(cfg, step)
        assert trainable == expected
        assert total > 40_000_000
    assert expected_prompt_trainable(cfg["model"], "hvpl", sc["prompts_per_task"], sc["increment"]) == expected


def test_paper_step0_count_equals_authors():
    """Step 0 at paper size: 55,433,130 parameters, the authors' HVPL step-0 state dict less its buffers (their
    tree-scan depthwise convs have no bias; an earlier version had 6 x 512 more)."""
    trainable, total = count_parameters(load_run_config("ytvis2019_20-2", "hvpl"), 0)
    assert trainable == total == 55_433_130


def test_step0_finetune_joint_train_everything():
    """method.md: step 0 trains everything (Mask2Former/VITA's FREEZE_AT: 0); a backbone freeze_at is kept."""
    cfg = load_run_config("ytvis2019_20-2", "finetune")
    tr0, tot0 = count_parameters(cfg, 0)
    tr3, tot3 = count_parameters(cfg, 3)
    assert cfg["model"]["backbone"]["freeze_at"] == 0
    assert tr0 == tot0 and tr3 == tot3
    with torch.device("meta"):
        from hvpl.model.backbone import build_backbone
        stem = sum(p.numel() for p in build_backbone(cfg["model"]).stem.parameters())
    frozen_stem = load_run_config("ytvis2019_20-2", "finetune", None, ["model.backbone.freeze_at=1"])
    assert count_parameters(frozen_stem, 3) == (tr3 - stem, tot3)
    # finetune grows only the class heads: 3 steps add 3 * 2 heads of I = 2 classes
    assert tot3 - tot0 == 3 * 2 * mlp_params([256, 256, 256, 2])
    joint = load_run_config("ytvis2019_20-2", "joint")
    assert count_parameters(joint, 0)[1] == tot0 + 2 * (mlp_params([256, 256, 256, 40]) - mlp_params([256, 256, 256, 20]))
    # the workflow runs joint as the last step (10 of 20-2): the same all-class model at any step index
    assert count_parameters(joint, 10) == count_parameters(joint, 0)
    with pytest.raises(HVPLError):
        count_parameters(joint, 11)
    with pytest.raises(HVPLError):
        count_parameters(cfg, 11)


@pytest.mark.parametrize("method", ["hvpl", "eclipse", "hvpl_no_video_prompts", "hvpl_no_context", "hvpl_no_ogc",
                                    "hvpl_ogc_authors"])
def test_tiny_trainable_counts_match_formula(method):
    cfg = load_run_config("synth_smoke", method)
    sc = cfg["scenario"]
    kind = "hvpl" if method in ("hvpl", "hvpl_no_context", "hvpl_no_ogc", "hvpl_ogc_authors") else "frame_only"
    expected = expected_prompt_trainable(cfg["model"], kind, sc["prompts_per_task"], sc["increment"])
    assert count_parameters(cfg, 1)[0] == expected
    assert count_parameters(cfg, 2)[0] == expected


def _trainable_prefixes(model):
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {".".join(n.split(".")[:3]) for n in names}


def test_set_trainable_names_per_method():
    torch.manual_seed(0)
    model = HVPLModel(tiny_cfg(), "hvpl", 2, [2, 2, 2])
    set_trainable(model, "hvpl", 2)
    assert model.train_group == 2
    assert _trainable_prefixes(model) == {
        "frame_classifier.heads.2", "frame_classifier.no_object.layers",
        "video_classifier.heads.2", "video_classifier.no_object.layers",
        "frame_decoder.prompts.1", "video_decoder.prompts.1"}
    assert model.video_decoder.prompts[1].fq_pos.requires_grad
    assert model._trunk_frozen()
    set_trainable(model, "hvpl", 0)
    assert model.train_group == 0 and not model._trunk_frozen()
    assert all(p.requires_grad for p in model.parameters())

    model = HVPLModel(tiny_cfg(), "hvpl_no_video_prompts", 2, [2, 2])
    assert len(model.video_decoder.prompts) == 0 and len(model.frame_decoder.prompts) == 1
    set_trainable(model, "hvpl_no_video_prompts", 1)
    assert _trainable_prefixes(model) == {
        "frame_classifier.heads.1", "frame_classifier.no_object.layers",
        "video_classifier.heads.1", "video_classifier.no_object.layers", "frame_decoder.prompts.0"}

    model = HVPLModel(tiny_cfg(), "finetune", 2, [2, 2])
    assert len(model.frame_decoder.prompts) == 0
    set_trainable(model, "finetune", 1)
    assert model.train_group == 0 and all(p.requires_grad for p in model.parameters())
    with pytest.raises(HVPLError):
        set_trainable(HVPLModel(tiny_cfg(), "hvpl", 2, [2]), "hvpl", 1)


def test_grow_for_step_init_rules():
    torch.manual_seed(0)
    model = HVPLModel(tiny_cfg(), "hvpl", 3, [2])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    grow_for_step(model, "hvpl", 2)
    fd, vd = model.frame_decoder, model.video_decoder
    assert model.classes_per_task == [2, 2] and model.num_groups == 2
    fg, vg = fd.prompts[0], vd.prompts[0]
    torch.testing.assert_close(fg.content, fd.query_feat.weight.mean(0).repeat(3, 1))
    torch.testing.assert_close(fg.pos, fd.query_embed.weight.mean(0).repeat(fd.num_layers, 3, 1))
    torch.testing.assert_close(vg.content, vd.query_feat.weight.mean(0).repeat(3, 1))
    torch.testing.assert_close(vg.pos, vd.query_embed.weight.mean(0).repeat(vd.num_layers, 3, 1))
    torch.testing.assert_close(vg.fq_pos, vd.fq_pos.weight.mean(0).repeat(3, 1))
    for grp, base in ((fg, fd.mask_embed), (vg, vd.mask_embed)):
        for a, b in zip(grp.mask_embed.state_dict().values(), base.state_dict().values()):
            assert torch.equal(a, b)
    for clf in (model.frame_classifier, model.video_classifier):
        last, src = clf.heads[1].layers[-1], clf.no_object.layers[-1]
        assert torch.equal(last.weight, src.weight.repeat(2, 1)) and torch.equal(last.bias, src.bias.repeat(2))
    grow_for_step(model, "hvpl", [2, 2, 2, 2])
    assert model.classes_per_task == [2, 2, 2, 2] and model.num_groups == 4
    with pytest.raises(HVPLError):
        grow_for_step(model, "hvpl", [3, 2])
    with pytest.raises(HVPLError):
        grow_for_step(model, "finetune", 2)


def test_count_trainable_helper():
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)
    assert count_trainable(lin) == (6, 8)
