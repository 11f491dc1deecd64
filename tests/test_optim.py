"""AdamW parameter groups, LR schedule, gradient clipping."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hvpl.engine.optim import (LR_DROP_FACTOR, build_optimizer, build_scheduler, clip_gradients, lr_factor,
                               param_groups)
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)

TRAIN = {"lr": 1e-3, "weight_decay": 0.05, "backbone_lr_mult": 0.1, "step0_lr_drop": 3, "clip_grad": 0.5}


class _Prompt(nn.Module):
    no_weight_decay = ("content",)

    def __init__(self):
        super().__init__()
        self.content = nn.Parameter(torch.randn(2, 4))
        self.mask_embed = nn.Linear(4, 4)


class _Toy(nn.Module):
    no_weight_decay = ("A_log",)

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
        self.frame_decoder = nn.Module()
        self.frame_decoder.query_feat = nn.Embedding(3, 4)
        self.frame_decoder.proj = nn.Linear(4, 4)
        self.frame_decoder.norm = nn.LayerNorm(4)
        self.frame_decoder.prompts = nn.ModuleList([_Prompt()])
        self.A_log = nn.Parameter(torch.zeros(4, 1))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _group_of(groups, name):
    found = [g for g in groups if name in g["names"]]
    assert len(found) == 1, name
    return found[0]


def test_param_groups_lr_and_decay():
    model = _Toy()
    groups = param_groups(model, TRAIN)
    expect = {  # name: (lr, weight decay)
        "backbone.0.weight": (1e-4, 0.05), "backbone.0.bias": (1e-4, 0.05),
        "backbone.1.weight": (1e-4, 0.0), "backbone.1.bias": (1e-4, 0.0),
        "frame_decoder.query_feat.weight": (1e-3, 0.0),
        "frame_decoder.proj.weight": (1e-3, 0.05), "frame_decoder.proj.bias": (1e-3, 0.05),
        "frame_decoder.norm.weight": (1e-3, 0.0), "frame_decoder.norm.bias": (1e-3, 0.0),
        "frame_decoder.prompts.0.content": (1e-3, 0.0), "A_log": (1e-3, 0.0),
        "frame_decoder.prompts.0.mask_embed.weight": (1e-3, 0.05), "frame_decoder.prompts.0.mask_embed.bias": (1e-3, 0.05),
    }
    all_names = sorted(n for g in groups for n in g["names"])
    assert all_names == sorted(expect)  # frozen parameters are left out
    for name, (lr, wd) in expect.items():
        g = _group_of(groups, name)
        assert math.isclose(g["lr"], lr) and g["weight_decay"] == wd, name
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)


def test_optimizer_skips_frozen_and_errors_without_trainables():
    model = _Toy()
    opt = build_optimizer(model, TRAIN)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.frozen.weight) not in in_opt
    model.requires_grad_(False)
    with pytest.raises(HVPLError):
        build_optimizer(model, TRAIN)
    with pytest.raises(HVPLError, match="train.lr"):
        param_groups(_Toy(), {"weight_decay": 0.0})


def test_step0_schedule_drops_once_and_incremental_is_constant():
    model = _Toy()
    for drop, expected in ((True, [1, 1, 1, LR_DROP_FACTOR, LR_DROP_FACTOR, LR_DROP_FACTOR]), (False, [1] * 6)):
        opt = build_optimizer(model, TRAIN)
        sched = build_scheduler(opt, TRAIN, drop=drop)
        base = [g["lr"] for g in opt.param_groups]
        for it in range(6):
            for g, b in zip(opt.param_groups, base):
                assert math.isclose(g["lr"], b * expected[it]), (drop, it)
            opt.step()
            sched.step()
    assert lr_factor(2, 3) == 1.0 and lr_factor(3, 3) == LR_DROP_FACTOR and lr_factor(10 ** 6, None) == 1.0


def test_clip_gradients_global_norm():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0])
    total = clip_gradients([a, b], 1.0)
    assert math.isclose(total, 5.0, rel_tol=1e-6)
    joint = torch.cat([a.grad, b.grad]).norm().item()
    assert math.isclose(joint, 1.0, rel_tol=1e-4)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0, 0.0]), rtol=1e-4, atol=1e-6)
    assert clip_gradients([a, b], None) is None and clip_gradients([a, b], 0) is None


def test_real_model_groups_follow_the_protocol():
    """Full tiny model: norms, embeddings and prompt embeddings get no decay; weights and biases of linear/conv
    layers (prompt mask MLPs included) and the tree scan's A_log/D (as the authors' trainer) decay."""
    from hvpl.config import load_run_config
    from hvpl.model.hvpl import HVPLModel

    cfg = load_run_config("synth_smoke", "hvpl", None, [])
    model = HVPLModel(cfg["model"], "hvpl", 2, [2, 2])
    decay = {n for g in param_groups(model, TRAIN) if g["weight_decay"] > 0 for n in g["names"]}
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    free = names - decay
    assert any(n.endswith("ssm.A_log") for n in decay) and any(n.endswith("ssm.D") for n in decay)
    assert all(not n.endswith(("ssm.A_log", "ssm.D")) for n in free)
    prompt_embeddings = {n for n in names if ".prompts." in n and ".mask_embed." not in n}
    assert {n.rsplit(".", 1)[1] for n in prompt_embeddings} == {"content", "pos", "fq_pos"}
    assert prompt_embeddings <= free
    # a prompt group's mask MLP is a linear layer, not an embedding: it decays like the base mask MLP
    assert {n for n in names if ".prompts." in n and ".mask_embed." in n} <= decay
    assert "frame_decoder.query_feat.weight" in free and "frame_decoder.decoder_norm.weight" in free
    assert "frame_decoder.mask_embed.layers.0.bias" in decay and "video_decoder.input_proj.weight" in decay


def test_resnet_convolutions_decay():
    """The paper-size backbone's convolutions (detectron2 ``ConvNorm``: a conv carrying its norm) decay; only its
    norms would not (FrozenBatchNorm2d holds buffers only, so none is trainable)."""
    from hvpl.config import load_run_config
    from hvpl.model.hvpl import HVPLModel

    cfg = load_run_config("synth_smoke", "hvpl", "paper_r50", [])
    with torch.device("meta"):
        model = HVPLModel(cfg["model"], "hvpl", 2, [2])
    decay = {n for g in param_groups(model, TRAIN) if g["weight_decay"] > 0 for n in g["names"]}
    convs = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.dim() == 4]
    assert len(convs) == 53 and all(f"backbone.{n}" in decay for n in convs)
