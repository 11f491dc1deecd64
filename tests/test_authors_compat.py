"""Tests for hvpl.model.authors_compat: the authors' test-time video path (inference.authors_compat)."""
from pathlib import Path

import pytest
import torch
import yaml

from hvpl.config import check_model_config
from hvpl.model.hvpl import HVPLModel
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "models"
T, H, W = 3, 32, 48


def tiny_model(classes=(2, 2, 2), method="hvpl", compat=True, prompts=3, enc_layers=2):
    cfg = yaml.safe_load((CONFIG / "tiny.yaml").read_text())
    cfg["video_decoder"]["enc_layers"] = enc_layers
    cfg["inference"]["authors_compat"] = compat
    torch.manual_seed(0)
    model = HVPLModel(cfg, method, prompts, list(classes))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                       # prompts start as copies of means: make every tensor distinct
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def video(seed=0):
    return torch.rand(T, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255


def logits(out):
    return torch.cat([o["pred_logits"] for o in out])


def test_default_off_and_config_checked():
    for name in ("tiny", "paper_r50"):
        assert yaml.safe_load((CONFIG / f"{name}.yaml").read_text())["inference"]["authors_compat"] is False
    cfg = yaml.safe_load((CONFIG / "tiny.yaml").read_text())
    cfg["inference"]["authors_compat"] = 1
    with pytest.raises(HVPLError, match="authors_compat"):
        check_model_config(cfg, "tiny.yaml")


def test_step_t_reads_frame_zero_only():
    """known-2: every group's clip queries read frame 0 only (the per-frame scan keeps frames apart), so the class
    logits ignore frames 1..T-1; the default path reads every frame."""
    x, y = video(0), video(0)
    y[1:] = video(5)[1:]
    model = tiny_model()
    with torch.no_grad():
        torch.testing.assert_close(logits(model.forward_video(x)), logits(model.forward_video(y)), rtol=0, atol=0)
        model.authors_compat = False
        assert not torch.allclose(logits(model.forward_video(x)), logits(model.forward_video(y)))


def test_prompt_key_positions_are_base_rows_for_several_frames():
    """known-2: with T >= 2 the prompt groups' key positions are rows of the base fq_pos, their own fq_pos unused;
    with T = 1 the authors' dec_pos rows of a prompt group are its own fq_pos."""
    model = tiny_model()
    x = video(1)
    with torch.no_grad():
        before, before_t1 = logits(model.forward_video(x)), logits(model.forward_video(x[:1]))
        for grp in model.video_decoder.prompts:
            grp.fq_pos.add_(1.0)
        torch.testing.assert_close(logits(model.forward_video(x)), before, rtol=0, atol=0)
        assert not torch.allclose(logits(model.forward_video(x[:1])), before_t1)


def test_matches_explicit_reference():
    """Per-frame chain over all groups (known-3), then rows [q_n, q_n+1) of the frame-major memory (known-2)."""
    model = tiny_model()
    vd = model.video_decoder
    x = video(2)
    with torch.no_grad():
        fq, vmf = model.encode_frames(x, list(range(model.num_groups)))
        joint = vd.input_proj(torch.cat(fq, 1))                          # (T, Qall, C)
        enc = torch.stack([vd.context_encoder(joint[t][None, None])[0, 0] for t in range(T)])
        src = enc.reshape(-1, enc.shape[-1])
        pos = torch.cat([vd.fq_pos.weight.repeat(T, 1)] + [g.fq_pos.repeat(T, 1) for g in vd.prompts])
        sizes = [vd.query_feat.weight.shape[0]] + [g.content.shape[0] for g in vd.prompts]
        out = model.forward_video(x)
        start = 0
        for k, n in enumerate(sizes):
            content, qpos, _, mlp = vd.group_queries(k, fq[k].shape[1])
            q = vd.decode(content, qpos, src[None, start:start + n], pos[start:start + n])[-1, 0]
            torch.testing.assert_close(out[k]["pred_logits"], model.video_classifier(q))
            torch.testing.assert_close(out[k]["pred_masks"], torch.einsum("qc,tchw->qthw", mlp(q), vmf))
            start += n


def test_single_group_differs_only_by_the_tree_scan():
    """Step 0: no slicing (all frames read); the scan runs per frame, so at T = 1 both paths agree and at T > 1
    they differ, and without tree-scan layers they agree at any T."""
    x = video(3)
    model = tiny_model(classes=(2,))
    with torch.no_grad():
        compat, compat1 = logits(model.forward_video(x)), logits(model.forward_video(x[:1]))
        model.authors_compat = False
        torch.testing.assert_close(compat1, logits(model.forward_video(x[:1])))
        assert not torch.allclose(compat, logits(model.forward_video(x)))
    model = tiny_model(classes=(2,), enc_layers=0)
    with torch.no_grad():
        compat = logits(model.forward_video(x))
        model.authors_compat = False
        torch.testing.assert_close(compat, logits(model.forward_video(x)))


def test_methods_without_video_prompts_unaffected_and_subsets_rejected():
    x = video(4)
    model = tiny_model(method="eclipse")
    with torch.no_grad():
        compat = logits(model.forward_video(x))
        model.authors_compat = False
        torch.testing.assert_close(compat, logits(model.forward_video(x)), rtol=0, atol=0)
    with pytest.raises(HVPLError, match="authors_compat"):
        tiny_model().forward_video(x, groups=[0, 2])
