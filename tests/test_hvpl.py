"""Tests for hvpl.model.hvpl: output shapes (tiny and paper size), preprocessing, whole-model group isolation,
the test-time path (every frame, every group alone), frozen trunk."""
from pathlib import Path

import pytest
import torch
import yaml

from hvpl.continual.growth import grow_for_step, set_trainable
from hvpl.model.hvpl import HVPLModel

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "models"


def model_cfg(name="tiny", **video):
    cfg = yaml.safe_load((CONFIG / f"{name}.yaml").read_text())
    cfg["video_decoder"].update(video)
    return cfg


def frames(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 255


def tiny_model(method="hvpl", classes=(2, 2), prompts=2, seed=0, **video):
    torch.manual_seed(seed)
    return HVPLModel(model_cfg(**video), method, prompts, list(classes))


def test_training_outputs_tiny_shapes():
    model = tiny_model(classes=(2, 2))
    set_trainable(model, "hvpl", 1)
    model.train()
    out = model(frames(2, 3, 3, 40, 50))
    f, v = out["frame"], out["video"]
    n_layers = model.frame_decoder.num_layers
    assert f["pred_logits"].shape == (6, 2, 5) and f["pred_masks"].shape == (6, 2, 16, 16)
    assert len(f["aux_outputs"]) == n_layers
    assert all(a["pred_logits"].shape == (6, 2, 5) for a in f["aux_outputs"])
    assert v["pred_logits"].shape == (2, 2, 5) and v["pred_masks"].shape == (2, 2, 3, 16, 16)
    n_fed = model.video_decoder.num_frame_layers_train
    assert v["frame_layers"] == n_fed
    assert v["pred_fq_embed"].shape == (2, n_fed, 3, 2, 64) and v["pred_cq_embed"].shape == (2, n_fed, 2, 64)
    assert len(v["aux_outputs"]) == n_fed * model.video_decoder.num_layers - 1
    for t in (f["pred_logits"], f["pred_masks"], v["pred_logits"], v["pred_masks"]):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


def test_prompt_step_gradients_reach_exactly_the_trainable_set():
    model = tiny_model(classes=(2, 2, 2))
    set_trainable(model, "hvpl", 2)
    model.train()
    out = model(frames(1, 2, 3, 32, 32))
    pix = model.trunk(frames(1, 3, 32, 32))
    assert not pix["mask_features"].requires_grad  # frozen trunk runs without autograd
    loss = sum(o["pred_logits"].sum() + o["pred_masks"].mean() for o in (out["frame"], out["video"]))
    loss = loss + out["video"]["pred_fq_embed"].sum() * 0  # the sim heads are frozen here
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_step0_trunk_gets_gradients():
    model = tiny_model(classes=(2,))
    set_trainable(model, "hvpl", 0)
    model.train()
    out = model(frames(1, 2, 3, 32, 32))
    out["video"]["pred_masks"].mean().backward()
    assert model.backbone.stem[0].weight.grad is not None


def test_preprocess_normalises_and_pads():
    model = tiny_model(classes=(2,))
    x = frames(2, 3, 33, 70)
    y = model.preprocess(x)
    assert y.shape == (2, 3, 64, 96)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.testing.assert_close(y[:, :, :33, :70], (x - mean) / std)
    assert (y[:, :, 33:] == 0).all() and (y[:, :, :, 70:] == 0).all()


def _old_group_results(model, video):
    model.eval()
    return model.forward_video(video)


@pytest.mark.parametrize("method", ["hvpl", "hvpl_no_video_prompts"])
def test_group_isolation_whole_model(method):
    """Adding and perturbing a new group leaves old groups' class scores (but no-object) and masks bit-identical."""
    model = tiny_model(method, classes=(2, 2), enc_layers=1)
    video = frames(4, 3, 32, 32, seed=1)
    before = _old_group_results(model, video)
    grow_for_step(model, method, 3)
    set_trainable(model, method, 2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    after = _old_group_results(model, video)
    assert len(after) == 3 and after[2]["pred_logits"].shape[-1] == 2 + 2 + 3 + 1
    for a, b in zip(before, after[:2]):
        assert a["task"] == b["task"]
        assert torch.equal(a["pred_logits"][:, :4], b["pred_logits"][:, :4])
        assert torch.equal(a["pred_masks"], b["pred_masks"])
        assert not torch.equal(a["pred_logits"][:, -1], b["pred_logits"][:, -1])  # shared head did change


def test_forward_video_matches_direct_single_group_computation():
    model = tiny_model(classes=(2, 2, 2), enc_layers=1)
    model.chunk_frames = 2  # 5 frames -> chunks of 2, 2, 1
    model.eval()
    video = frames(5, 3, 32, 40, seed=2)
    results = model.forward_video(video)
    assert [r["task"] for r in results] == [0, 1, 2]
    with torch.no_grad():
        pix = model.pixel_decoder(model.backbone(model.preprocess(video)))
        memory = model.frame_decoder.prepare_memory(pix["multi_scale_features"])
        vmf = model.video_decoder.mask_features(pix["video_mask_source"])
        for k, res in enumerate(results):
            fq = model.frame_decoder.run_group(k, memory, pix["mask_features"])["queries"][-1]  # (T, Qg, C)
            vid = model.video_decoder(fq[None, None], vmf[None], k)
            logits = model.video_classifier(vid["queries"][-1, -1, 0])
            masks = vid["masks"][-1, -1, 0]
            assert res["pred_masks"].shape == (masks.shape[0], 5, 8, 16)  # 32x40 padded to 32x64
            torch.testing.assert_close(res["pred_logits"], logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(res["pred_masks"], masks, atol=1e-4, rtol=1e-4)


def test_every_frame_reaches_every_group_at_test_time():
    """Guards against the reference code's slicing error (video queries saw only frame 0 from step 1 on)."""
    model = tiny_model(classes=(2, 2, 2), enc_layers=1)
    model.eval()
    video = frames(4, 3, 32, 32, seed=3)
    base = model.forward_video(video)
    for k in (1, 3):
        pert = video.clone()
        pert[k] = frames(3, 32, 32, seed=10 + k)
        out = model.forward_video(pert)
        for a, b in zip(base, out):
            assert not torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-5), (k, a["task"])


def test_no_video_prompt_methods_use_base_clip_queries():
    model = tiny_model("eclipse", classes=(2, 2))
    model.eval()
    out = model.forward_video(frames(2, 3, 32, 32))
    q = model.video_decoder.query_feat.num_embeddings
    assert [r["pred_logits"].shape for r in out] == [(q, 5), (q, 5)]


def test_deterministic_for_fixed_seed():
    a = tiny_model(classes=(2, 2), seed=5)
    b = tiny_model(classes=(2, 2), seed=5)
    set_trainable(a, "hvpl", 1), set_trainable(b, "hvpl", 1)
    x = frames(1, 2, 3, 32, 32)
    assert torch.equal(a(x)["video"]["pred_masks"], b(x)["video"]["pred_masks"])


def test_paper_size_shapes():
    torch.manual_seed(0)
    model = HVPLModel(model_cfg("paper_r50"), "hvpl", 5, [20, 2])
    set_trainable(model, "hvpl", 1)
    model.train()
    out = model(frames(1, 2, 3, 64, 64))
    assert out["frame"]["pred_logits"].shape == (2, 5, 23)
    assert out["frame"]["pred_masks"].shape == (2, 5, 16, 16)
    assert len(out["frame"]["aux_outputs"]) == 9
    assert out["video"]["pred_logits"].shape == (1, 5, 23)
    assert out["video"]["pred_masks"].shape == (1, 5, 2, 16, 16)
    assert len(out["video"]["aux_outputs"]) == 3 * 3 - 1
    model.eval()
    res = model.forward_video(frames(2, 3, 64, 64))
    assert [r["pred_logits"].shape for r in res] == [(100, 23), (5, 23)]
    assert res[0]["pred_masks"].shape == (100, 2, 16, 16)


def test_video_aux_outputs_in_clip_layer_then_frame_layer_order():
    model = tiny_model(classes=(2, 2))
    d, lyr, b, q, t, c = 3, 2, 2, 2, 3, model.video_decoder.hidden_dim
    g = torch.Generator().manual_seed(0)
    vid = {"queries": torch.randn(d, lyr, b, q, c, generator=g),
           "masks": torch.randn(d, lyr, b, q, t, 4, 4, generator=g),
           "fq_embed": torch.randn(lyr, b, t, q, c, generator=g), "cq_embed": torch.randn(d, lyr, b, q, c, generator=g)}
    out = model._video_outputs(vid)
    logits = model.video_classifier(vid["queries"])
    levels = out["aux_outputs"] + [out]
    assert len(levels) == d * lyr
    for k, level in enumerate(levels):
        i, j = divmod(k, lyr)
        assert torch.equal(level["pred_masks"], vid["masks"][i, j])
        assert torch.equal(level["pred_logits"], logits[i, j])
    # the similarity embeddings: every frame layer, the final clip layer, clip axis first
    assert out["frame_layers"] == lyr
    assert torch.equal(out["pred_cq_embed"], vid["cq_embed"][-1].transpose(0, 1))
    assert torch.equal(out["pred_fq_embed"], vid["fq_embed"].transpose(0, 1))


def _clip_targets(batch, t, size):
    out = []
    for j in range(batch):
        masks = torch.zeros(1, t, size, size, dtype=torch.bool)
        masks[0, :, 8 + 4 * j:30, 10:34] = True
        out.append({"labels": torch.tensor([2 + j]), "masks": masks, "present": torch.ones(1, t, dtype=torch.bool)})
    return out


def _prompt_step_loss(model, images, targets, autocast: bool):
    from hvpl.engine.batching import split_outputs
    from hvpl.model.criterion import SetCriterion

    crit = SetCriterion(model_cfg()["loss"], model.num_classes)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(images)   # the criterion runs outside autocast, as in the trainer
    per_clip = split_outputs(out, images.shape[0], images.shape[1])
    loss = sum(sum(v.float() for v in crit(per_clip[j], [targets[j]], torch.Generator().manual_seed(j)).values())
               for j in range(images.shape[0]))
    return out, loss


def test_prompt_step_runs_under_bf16_autocast():
    """The CUDA training precision (bf16 autocast) on CPU: outputs are bf16, the loss is finite and close to the
    float32 loss, and the backward reaches the trainable set (prompts and new heads)."""
    model = tiny_model()
    set_trainable(model, model.method, 1)
    model.set_step_mode(1)
    model.train()
    images, targets = frames(2, 3, 3, 64, 64), _clip_targets(2, 3, 64)
    _, ref = _prompt_step_loss(model, images, targets, autocast=False)
    out, loss = _prompt_step_loss(model, images, targets, autocast=True)
    assert out["frame"]["pred_logits"].dtype == torch.bfloat16 and out["video"]["pred_masks"].dtype == torch.bfloat16
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) < 0.01 * ref.item()
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert model.frame_decoder.prompts[0].content.grad.abs().sum() > 0
