"""The authors' OGC variant (hvpl_ogc_authors): against fixtures made by their ogc/ code, and its rules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hvpl.continual.ogc import load_basis, project_gradient, save_basis
from hvpl.continual.ogc_authors import (PCA_COMPONENTS, accumulated_basis, authors_update, first_basis,
                                        frame_vectors, memory_frames, pca_scores)
from hvpl.utils.errors import HVPLError
from model_files import save_untrained

torch.set_num_threads(1)
FIXTURE = Path(__file__).parent / "data" / "ogc_authors"


def _orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return torch.from_numpy(q)


def _gram(eigvals: list[float], n: int, seed: int) -> torch.Tensor:
    U = _orthonormal(n, len(eigvals), seed)
    return U @ torch.diag(torch.tensor(eigvals, dtype=torch.float64)) @ U.T


# ------------------------------------------------------------------------------------ against their code
def test_matches_the_authors_code_on_their_fixture():
    """tools/parity/ogc_authors_fixture.py ran their get_prefix_matrix / update_memory_prefix / Gram / projection
    on these features (256 frames x 2 queries x 32 channels) and gradients (21 x 256) at steps 1 and 2."""
    meta = json.loads((FIXTURE / "authors.json").read_text())
    inputs, theirs = np.load(FIXTURE / "inputs.npz"), np.load(FIXTURE / "authors.npz")
    grads = torch.from_numpy(inputs["grads"])
    X1, X2 = (torch.from_numpy(inputs[k].reshape(len(inputs[k]), -1)) for k in ("features1", "features2"))
    M1 = authors_update(X1, None, meta["threshold"])
    M2 = authors_update(X2, M1, meta["threshold"])
    assert (M1.shape[1], M2.shape[1]) == (meta["rank1"], meta["rank2"])
    # theirs runs PCA, Gram and SVD in float32: a projector error of a few float32 ulps times the gradient size
    for M, key in ((M1, "projected1"), (M2, "projected2")):
        ours = project_gradient(grads, M).double().numpy()
        scale = np.abs(inputs["grads"]).max()
        np.testing.assert_allclose(ours, theirs[key], atol=2e-5 * scale, rtol=0)


# ------------------------------------------------------------------------------------------------ rules
def test_first_basis_keeps_the_count_strictly_below_the_threshold():
    """sigma(G)^2 = eigenvalue^2 fractions; their np.sum(cumsum < t) keeps one column fewer than the smallest
    count that reaches t (channel-space GPM keeps that count)."""
    eig = [4.0, 3.0, 2.0, 1.0]
    G = _gram(eig, 10, 0)
    energy = np.cumsum(np.square(eig)) / np.sum(np.square(eig))   # 0.533, 0.833, 0.967, 1
    for threshold, r in ((0.5, 0), (0.7, 1), (0.9, 2), (0.99, 3)):
        F = first_basis(G, threshold)
        assert F.shape == (10, r), (threshold, energy)
    F = first_basis(G, 0.9)
    U = _orthonormal(10, 4, 0)
    np.testing.assert_allclose(F @ F.T, U[:, :2] @ U[:, :2].T, atol=1e-10)


def test_accumulation_adds_until_the_threshold_and_keeps_the_old_columns():
    n = 12
    U = _orthonormal(n, 6, 1)
    F = U[:, :2]
    # energy: old span 4^2 + 3^2 = 25 of 25 + 4 + 1 = 30 -> 0.833 captured; 2 and 1 outside
    G = U[:, [0, 1, 2, 3]] @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ U[:, [0, 1, 2, 3]].T
    assert accumulated_basis(G, F, 0.8).shape == (n, 2)            # already captured: nothing added
    out = accumulated_basis(G, F, 0.9)                              # 0.833 + 4/30 = 0.967 >= 0.9 after one
    assert out.shape == (n, 3) and torch.equal(out[:, :2], F)
    np.testing.assert_allclose(out[:, 2:] @ out[:, 2:].T, U[:, 2:3] @ U[:, 2:3].T, atol=1e-10)
    # never more columns than samples
    full = torch.cat([F, _orthonormal(n, n - 1, 2)], 1)
    assert accumulated_basis(G, full, 1.0).shape == (n, n)


def test_pca_scores_are_centred_top_components():
    rng = np.random.default_rng(3)
    X = torch.from_numpy(rng.standard_normal((60, 80)) + 5.0)
    S = pca_scores(X)
    assert S.shape == (60, PCA_COMPONENTS)
    Xc = X - X.mean(0)
    # scores are orthogonal with non-increasing variance and span the top-50 left singular space of Xc
    gram = S.T @ S
    np.testing.assert_allclose(gram - torch.diag(torch.diagonal(gram)), 0.0, atol=1e-8)
    U, sv, _ = torch.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(torch.diagonal(gram), sv[:PCA_COMPONENTS] ** 2, rtol=1e-10)
    with pytest.raises(HVPLError, match="PCA to 50 components"):
        pca_scores(X[:40])


def test_frame_vectors_flatten_each_frame_query_major():
    frames, Q, C = 3, 4, 5
    feats = torch.arange(frames * Q * C, dtype=torch.float32).reshape(frames, Q, C)   # (frame, query, channel)
    R = feats.reshape(-1, C).T                                   # collect_features' layout: (C, frames * Q)
    assert torch.equal(frame_vectors(R, frames), feats.reshape(frames, Q * C))
    with pytest.raises(ValueError):
        frame_vectors(R, 5)


def test_memory_frames_is_the_channel_count():
    assert memory_frames(64) == 64
    with pytest.raises(HVPLError, match="at least 50 channels"):
        memory_frames(32)


def test_basis_files_record_their_space(tmp_path):
    save_basis(tmp_path / "s.pt", torch.zeros(8, 2), 0.7, 8, 1, space="sample")
    save_basis(tmp_path / "c.pt", torch.zeros(8, 2), 0.7, 8, 1)
    assert load_basis(tmp_path / "s.pt", 8, 1, space="sample").shape == (8, 2)
    with pytest.raises(HVPLError, match="entry 'space' is 'sample'"):
        load_basis(tmp_path / "s.pt", 8, 1, space="channel")
    with pytest.raises(HVPLError, match="entry 'space' is 'channel'"):
        load_basis(tmp_path / "c.pt", 8, 1, space="sample")


# --------------------------------------------------------------------------------------- build_memory
def test_build_memory_draws_one_frame_per_channel(tiny_split_dir, tmp_path):
    from hvpl.config import load_run_config
    from hvpl.continual.ogc import build_memory

    cfg = load_run_config("synth_smoke", "hvpl_ogc_authors", None, ["model.frame_decoder.num_queries=4"])
    C = cfg["model"]["hidden_dim"]
    m0 = save_untrained(cfg, 0, tiny_split_dir / "train_step0.json", None, tmp_path / "m0.pth")
    save_untrained(cfg, 1, tiny_split_dir / "train_step1.json", m0, tmp_path / "m1.pth")
    b1 = build_memory(cfg, step=1, prev_model=tmp_path / "m0.pth", train_json=tiny_split_dir / "train_step0.json",
                      out=tmp_path / "b1.pt")
    saved = torch.load(tmp_path / "b1.pt", weights_only=True)
    assert saved["space"] == "sample" and saved["num_features"] == C * 4   # C frames x 4 base queries
    assert b1.shape[0] == C and b1.shape[1] < PCA_COMPONENTS
    b2 = build_memory(cfg, step=2, prev_model=tmp_path / "m1.pth", train_json=tiny_split_dir / "train_step1.json",
                      prev_basis=tmp_path / "b1.pt", out=tmp_path / "b2.pt")
    assert torch.equal(b2[:, :b1.shape[1]], b1)
    # a channel-space basis is not accumulated into a sample-space one
    hvpl_cfg = load_run_config("synth_smoke", "hvpl", None, ["model.frame_decoder.num_queries=4",
                                                             "scenario.train.ogc_samples=2"])
    build_memory(hvpl_cfg, step=1, prev_model=tmp_path / "m0.pth", train_json=tiny_split_dir / "train_step0.json",
                 out=tmp_path / "c1.pt")
    with pytest.raises(HVPLError, match="needs a sample-space basis"):
        build_memory(cfg, step=2, prev_model=tmp_path / "m1.pth", train_json=tiny_split_dir / "train_step1.json",
                     prev_basis=tmp_path / "c1.pt", out=tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
