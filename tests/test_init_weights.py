"""hvpl.engine.init_weights: a step-0 model initialised from our own weights file or a detectron2 VITA one."""
from __future__ import annotations

import pytest
import torch

from hvpl.config import load_run_config
from hvpl.engine.init_weights import load_init_weights, vita_to_hvpl_name
from hvpl.engine.model_file import rebuild_model
from hvpl.model.hvpl import HVPLModel
from hvpl.utils.errors import HVPLError
from authors_naming import vita_names


def _model(seed: int, model: str | None = None) -> HVPLModel:
    torch.manual_seed(seed)
    cfg = load_run_config("synth_smoke", "hvpl", model, [])
    return HVPLModel(cfg["model"], "hvpl", 2, [2])


# VITA-COCO tensors HVPL does not take over: class heads (replaced by incremental classifiers), the window
# attention object encoder (replaced by the tree scan), the criteria's buffers
VITA_UNUSED = {"sem_seg_head.predictor.class_embed.weight": (81, None), "vita_module.class_embed.bias": (81,),
               "vita_module.enc_self_attn.0.self_attn.in_proj_weight": (None, None),
               "vita_module.enc_ffn.0.linear1.weight": (None, None), "criterion.empty_weight": (81,)}


def _vita_file(src: HVPLModel, cfg: dict) -> dict:
    own = src.state_dict()
    state = {theirs: own[ours].clone() for theirs, ours in vita_names(cfg).items()}
    state.update({k: own[k].clone() for k in own if k.startswith("backbone.")})
    dim = cfg["hidden_dim"]
    for name, shape in VITA_UNUSED.items():
        state[name] = torch.randn(*(dim if s is None else s for s in shape))
    return {"model": state, "__author__": "detectron2-like"}


def test_every_vita_name_maps_onto_ours():
    cfg = load_run_config("synth_smoke", "hvpl", None, [])["model"]
    for theirs, ours in vita_names(cfg).items():
        assert vita_to_hvpl_name(theirs) == ours, theirs
    assert vita_to_hvpl_name("backbone.res2.0.conv1.norm.running_var") == "backbone.res2.0.conv1.norm.running_var"
    assert vita_to_hvpl_name("vita_module.enc_self_attn.0.norm.weight") == "video_decoder.enc_self_attn.0.norm.weight"


def test_vita_file_initialises_everything_but_hvpl_own_parts(tmp_path, capsys):
    cfg = load_run_config("synth_smoke", "hvpl", None, [])["model"]
    src, dst = _model(0), _model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    torch.save(_vita_file(src, cfg), tmp_path / "vita_coco.pth")
    report = load_init_weights(dst, str(tmp_path / "vita_coco.pth"))
    mapped = set(vita_names(cfg).values()) | {k for k in before if k.startswith("backbone.")}
    after, source = dst.state_dict(), src.state_dict()
    assert report["format"] == "detectron2-vita" and report["loaded"] == len(mapped)
    assert sorted(report["unused"]) == sorted(VITA_UNUSED)
    for key in after:
        if key in mapped:
            assert torch.equal(after[key], source[key]), key
        else:   # HVPL's own parts: tree-scan context encoder, incremental classifiers, prompts
            assert key.startswith(("video_decoder.context_encoder.", "frame_classifier.", "video_classifier.",
                                   "frame_decoder.prompts.", "video_decoder.prompts.")), key
            assert torch.equal(after[key], before[key]), key
    err = capsys.readouterr().err
    assert "detectron2 VITA/Mask2Former/HVPL names" in err and "vita_module.enc_self_attn 1" in err
    assert f"unused: {', '.join(report['unused'])}" in err   # VITA-COCO's left-overs listed by name
    assert "warning" not in err


def test_vita_names_cover_the_paper_model(tmp_path):
    """At the paper's sizes every VITA-COCO tensor HVPL takes over lands on a tensor of ours of its shape, and
    the ResNet takes VITA's stride placement (3x3 conv)."""
    cfg = load_run_config("ytvis2019_20-5", "hvpl", "paper_r50", [])["model"]
    model = HVPLModel(cfg, "hvpl", 10, [20])
    own = model.state_dict()
    table = vita_names(cfg)
    assert all(vita_to_hvpl_name(k) in own for k in table)
    shared = {k for k in own if not k.startswith(("backbone.", "video_decoder.context_encoder.",
                                                  "frame_classifier.", "video_classifier."))}
    assert shared == set(table.values())
    block = model.backbone.res3[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)   # detectron2's MSRA default
    state = {k: v for k, v in own.items() if k.startswith("backbone.res3.")}
    state["vita_module.fq_pos.weight"] = own["video_decoder.fq_pos.weight"]
    torch.save({"model": state}, tmp_path / "vita.pth")
    assert load_init_weights(model, str(tmp_path / "vita.pth"))["loaded"] == len(state)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    # the next step, OGC memory and predict rebuild the model from model_final.pth with the config unchanged
    ckpt = {"model": model.state_dict(), "model_config": cfg, "method": "hvpl", "step": 0,
            "classes_per_task": [20], "scenario": {"prompts_per_task": 10}}
    rebuilt = rebuild_model(ckpt).backbone.res3[0]
    assert rebuilt.conv1.stride == (1, 1) and rebuilt.conv2.stride == (2, 2)


def test_own_weights_file_copies_every_tensor(tmp_path, capsys):
    src, dst = _model(0), _model(1)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    report = load_init_weights(dst, str(tmp_path / "w.pth"))
    assert report["format"] == "hvpl" and report["unused"] == []
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    err = capsys.readouterr().err
    assert "initialised" in err and "warning" not in err


def test_shape_mismatches_are_skipped_with_a_warning(tmp_path, capsys):
    src, dst = _model(0), _model(1)
    state = src.state_dict()
    state["frame_decoder.query_feat.weight"] = torch.zeros(99, state["frame_decoder.query_feat.weight"].shape[1])
    torch.save(state, tmp_path / "other_size.pth")
    before = dst.state_dict()["frame_decoder.query_feat.weight"].clone()
    report = load_init_weights(dst, str(tmp_path / "other_size.pth"))
    assert report["unused"] == ["frame_decoder.query_feat.weight"]
    assert torch.equal(dst.state_dict()["frame_decoder.query_feat.weight"], before)
    err = capsys.readouterr().err
    assert "1 tensors named as this model's have another shape" in err and "frame_decoder.query_feat.weight (99," in err


def test_foreign_head_names_load_the_backbone_and_warn(tmp_path, capsys):
    src, dst = _model(0), _model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    renamed = {(k if k.startswith("backbone.") else f"head.{k}"): v for k, v in src.state_dict().items()}
    torch.save(renamed, tmp_path / "other.pth")
    load_init_weights(dst, str(tmp_path / "other.pth"))
    after = dst.state_dict()
    assert all(torch.equal(after[k], src.state_dict()[k]) for k in after if k.startswith("backbone."))
    assert all(torch.equal(after[k], before[k]) for k in after if not k.startswith("backbone."))
    assert "only backbone tensors matched" in capsys.readouterr().err


def test_unreadable_or_malformed_file_names_it(tmp_path):
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(HVPLError, match="bad.pth: cannot read train.init_weights"):
        load_init_weights(_model(0), str(tmp_path / "bad.pth"))
    torch.save({"model": {"backbone.x": "text"}}, tmp_path / "odd.pth")
    with pytest.raises(HVPLError, match="odd.pth: entry 'backbone.x'"):
        load_init_weights(_model(0), str(tmp_path / "odd.pth"))


def test_step0_model_starts_from_the_configured_file(tiny_split_dir, tmp_path):
    """scenario.train.init_weights reaches the step-0 model build (and only step 0's), and is described."""
    from hvpl.engine.init_weights import describe_init
    from hvpl.engine.step_plan import build_step_model, plan_step

    model_cfg = load_run_config("synth_smoke", "hvpl", None, [])["model"]
    src = _model(0)
    torch.save(_vita_file(src, model_cfg), tmp_path / "vita.pth")
    cfg = load_run_config("synth_smoke", "hvpl", None, [f"scenario.train.init_weights={tmp_path / 'vita.pth'}"])
    plan, _ = plan_step(cfg, 0, tiny_split_dir / "train_step0.json", None, 0)
    model = build_step_model(cfg, plan, None)
    own, source = model.state_dict(), src.state_dict()
    for name in vita_names(model_cfg).values():
        assert torch.equal(own[name], source[name]), name
    assert describe_init(cfg) == f"model:{tmp_path / 'vita.pth'}"
