"""Tests for hvpl.model.video_decoder: clip decoder vs a hand-written reference (key positions repeated over
frames, all frames attended), group isolation, prompt init, context encoder per video, shapes."""
from pathlib import Path

import pytest
import torch
import yaml

from hvpl.model.video_decoder import VideoDecoder
from test_frame_decoder import ref_mha

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "models"
C = 64


def tiny_cfg(enc_layers=None):
    cfg = yaml.safe_load((CONFIG / "tiny.yaml").read_text())
    if enc_layers is not None:
        cfg["video_decoder"]["enc_layers"] = enc_layers
    return cfg


def inputs(lyr, b, t, qf, seed=0, hw=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(lyr, b, t, qf, C, generator=g), torch.randn(b, t, C, hw, hw, generator=g)


def ref_decoder(dec, fq, vmf, content, pos_layers, key_pos, mask_mlp):
    """Independent clip decoder for one group without context encoder. fq: (B, T, Qf, C) (one frame layer);
    returns final normed queries (B, Qv, C) and masks (B, Qv, T, h, w)."""
    b, t, qf, _ = fq.shape
    mem = dec.input_proj(fq).reshape(b, t * qf, C)
    mem_pos = torch.stack([key_pos[j] for f in range(t) for j in range(qf)])  # token (f, j) -> key_pos[j]
    q = content[None].repeat(b, 1, 1)
    for i in range(dec.num_layers):
        cl, sl, fl = dec.cross_layers[i], dec.self_layers[i], dec.ffn_layers[i]
        pos = pos_layers[i]
        q = cl.norm(q + ref_mha(cl.attn, q + pos, mem + mem_pos, mem))
        q = sl.norm(q + ref_mha(sl.attn, q + pos, q + pos, q))
        q = fl.norm(q + fl.linear2(torch.relu(fl.linear1(q))))
    normed = dec.decoder_norm(q)
    emb = mask_mlp(normed)
    masks = torch.zeros(b, emb.shape[1], t, *vmf.shape[-2:], dtype=emb.dtype)
    for bi in range(b):
        for f in range(t):
            masks[bi, :, f] = torch.einsum("qc,chw->qhw", emb[bi], vmf[bi, f])
    return normed, masks


def test_base_group_matches_reference_training_shapes():
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(), context=False)
    dec.train()
    fq, vmf = inputs(3, 2, 4, 16)
    out = dec(fq, vmf, 0)
    d = dec.num_layers
    assert out["queries"].shape == (d, 3, 2, 16, C)
    assert out["masks"].shape == (d, 3, 2, 16, 4, 6, 6)
    assert out["fq_embed"].shape == (3, 2, 4, 16, C)
    assert out["cq_embed"].shape == (d, 3, 2, 16, C)
    for lyr in range(3):
        q, m = ref_decoder(dec, fq[lyr], vmf, dec.query_feat.weight, [dec.query_embed.weight] * d,
                           dec.fq_pos.weight, dec.mask_embed)
        torch.testing.assert_close(out["queries"][-1, lyr], q, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["masks"][-1, lyr], m, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["fq_embed"], dec.sim_embed_frame(dec.input_proj(fq)))
    torch.testing.assert_close(out["cq_embed"], dec.sim_embed_clip(out["queries"]))


def test_eval_returns_last_clip_layer_only():
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(), context=False)
    fq, vmf = inputs(1, 1, 3, 16)
    dec.train()
    train_out = dec(fq, vmf, 0)
    dec.eval()
    with torch.no_grad():
        out = dec(fq, vmf, 0)
    assert out["queries"].shape[0] == 1
    torch.testing.assert_close(out["queries"][0], train_out["queries"][-1], atol=1e-5, rtol=1e-4)


def test_prompt_group_init_and_reference():
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(), context=False)
    grp = dec.add_group(3)
    torch.testing.assert_close(grp.content, dec.query_feat.weight.mean(0).expand(3, -1))
    torch.testing.assert_close(grp.pos, dec.query_embed.weight.mean(0).expand(dec.num_layers, 3, -1))
    torch.testing.assert_close(grp.fq_pos, dec.fq_pos.weight.mean(0).expand(3, -1))
    for a, b in zip(grp.mask_embed.parameters(), dec.mask_embed.parameters()):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        for p in grp.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    # float64: the module and the reference sum in different orders (fused attention, einsum vs loops); in
    # float32 the mask logits (|m| ~ 10-100, sums over C) differ by 1e-4 or 2e-4 depending on the CPU kernels
    dec.double()
    fq, vmf = (x.double() for x in inputs(1, 2, 3, 3, seed=3))
    out = dec(fq, vmf, 1)
    q, m = ref_decoder(dec, fq[0], vmf, grp.content, list(grp.pos), grp.fq_pos, grp.mask_embed)
    torch.testing.assert_close(out["queries"][-1, 0], q, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out["masks"][-1, 0], m, atol=1e-9, rtol=1e-10)
    with pytest.raises(ValueError):
        dec(inputs(1, 1, 3, 5)[0].double(), vmf[:1], 1)


@pytest.mark.parametrize("num_prompts", [2, 16])   # 16 = the base frame-query count of tiny.yaml
def test_base_clip_queries_on_prompt_frames_use_mean_key_position(num_prompts):
    """Methods without video prompts feed a P-query frame group to the base clip queries: the key positions are
    the mean fq_pos whatever P is, also when P equals the base count."""
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(), context=False)
    fq, vmf = inputs(1, 1, 3, num_prompts, seed=4)
    out = dec(fq, vmf, 0, prompt_input=True)
    mean_pos = dec.fq_pos.weight.mean(0).expand(num_prompts, -1)
    q, _ = ref_decoder(dec, fq[0], vmf, dec.query_feat.weight, [dec.query_embed.weight] * dec.num_layers,
                       mean_pos, dec.mask_embed)
    torch.testing.assert_close(out["queries"][-1, 0], q, atol=1e-5, rtol=1e-4)
    if num_prompts != dec.fq_pos.weight.shape[0]:
        with pytest.raises(ValueError, match="prompt_input=True"):   # base frame queries of the wrong count
            dec(fq, vmf, 0)


@pytest.mark.parametrize("enc_layers", [0, 1])
def test_every_frame_matters(enc_layers):
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(enc_layers), context=True)
    dec.add_group(2)
    dec.eval()
    for group, qf in ((0, 16), (1, 2)):
        fq, vmf = inputs(1, 1, 4, qf, seed=5)
        with torch.no_grad():
            base = dec(fq, vmf, group)["queries"]
            for k in range(1, 4):
                pert = fq.clone()
                pert[:, :, k] += 1.0
                assert not torch.allclose(dec(pert, vmf, group)["queries"], base, atol=1e-4)


def test_context_encoder_scans_each_video_alone():
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(enc_layers=1), context=True)
    assert len(dec.context_encoder.layers) == 1
    fq, _ = inputs(2, 2, 3, 16, seed=6)
    enc = dec.encode(fq)
    alone = dec.encode(fq[1:, 1:])
    torch.testing.assert_close(enc[1:, 1:], alone, atol=1e-5, rtol=1e-4)
    # the context encoder is not the identity: encoding differs from the plain input projection
    assert not torch.allclose(enc, dec.input_proj(fq), atol=1e-4)
    assert len(VideoDecoder(tiny_cfg(enc_layers=1), context=False).context_encoder.layers) == 0


def test_groups_are_isolated_bitwise():
    torch.manual_seed(0)
    dec = VideoDecoder(tiny_cfg(), context=True)
    dec.add_group(2)
    fq0, vmf = inputs(2, 1, 3, 16, seed=7)
    fq1, _ = inputs(2, 1, 3, 2, seed=8)
    before = [dec(fq0, vmf, 0), dec(fq1, vmf, 1)]
    new = dec.add_group(2)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p))
    after = [dec(fq0, vmf, 0), dec(fq1, vmf, 1)]
    for a, b in zip(before, after):
        for key in a:
            assert torch.equal(a[key], b[key])
