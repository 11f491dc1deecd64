"""Developer tool: regenerate the fixture that checks ``hvpl_ogc_authors`` against the authors' ``ogc/`` code.

Runs the authors' own functions (JiahuaDong/HVPL ``ogc/memory.py``: ``get_prefix_matrix``,
``update_memory_prefix``; the Gram step of ``ogc/feature_data_for_grad.py`` and the projection line of
``ogc/hook_grad.py`` are one-liners, restated here with their file:line) on seeded features and gradients,
writes the inputs and their outputs to ``tests/data/ogc_authors/``, and compares hvpl's variant on the same
inputs. Their code is imported from a checkout outside the project, never copied:

    mkdir -p /tmp/hvpl_src && git --git-dir=$MIRROR/JiahuaDong+HVPL/repo archive HEAD | tar -x -C /tmp/hvpl_src
    python -m venv /tmp/parity_venv_t && /tmp/parity_venv_t/bin/pip install torch numpy scikit-learn
    PYTHONPATH=.:/tmp/hvpl_src /tmp/parity_venv_t/bin/python tools/parity/ogc_authors_fixture.py \
        --out tests/data/ogc_authors [--paper-size]

Sizes: their memory is hard-coded to 256 frames and PCA(50); the fixture uses 2 queries x 32 channels per frame
(64 features: sklearn's ``auto`` solver is then the exact one) and a (P, 256) gradient. ``--paper-size`` also
measures, without writing anything, how far their randomized PCA solver (chosen by sklearn on wider inputs,
e.g. 256 x 105*256 at paper size) lands from the exact top-50 PCA hvpl computes.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

THRESHOLD = 0.7          # scripts/ytb2019_20_2.sh THRESHOLD=0.7
FRAMES = 256             # ogc/memory.py target_samples
QUERIES, CHANNELS = 2, 32
PROMPTS, PROBES = 5, 16  # gradient rows: a prompt content's P rows, then extra probe rows
CLIP_FRAMES = 4          # ogc/feature_data_for_grad.py: cfg.INPUT.SAMPLING_FRAME_NUM = 4


def seeded_features(seed: int, frames: int, queries: int, channels: int, rank: int, decay: float) -> np.ndarray:
    """(frames, queries, channels) float32: a slowly decaying low-rank signal plus noise (sigma^4 energy is
    spread over tens of directions, so the 0.7 cut keeps several)."""
    rng = np.random.default_rng(seed)
    scales = 3.0 * decay ** np.arange(rank)
    signal = (rng.standard_normal((frames, rank)) * scales) @ rng.standard_normal((rank, queries * channels))
    noise = 0.05 * rng.standard_normal((frames, queries * channels))
    return (signal + noise).reshape(frames, queries, channels).astype(np.float32)


class _Predictor:
    g_prefix_feature: dict


class _FakeModel:
    """Stands in for their HVPL in eval mode: one "video" per batch, its CLIP_FRAMES frames' layer-0 features
    stored as the predictor does (vita_mask2former_transformer_decoder.py:753, (Q_all, frames, C))."""

    def __init__(self):
        self.sem_seg_head = type("Head", (), {})()
        self.sem_seg_head.predictor = _Predictor()

    def eval(self):
        return self

    def __call__(self, batch):
        self.sem_seg_head.predictor.g_prefix_feature = {0: {"key": batch[0]["features"].permute(1, 0, 2)}}
        return None


def their_pca_scores(memory, feats: np.ndarray) -> np.ndarray:
    """Their get_prefix_matrix over a loader of 1-video batches whose first FRAMES frames are ``feats``;
    they count videos, keep collecting to 256 videos and truncate the frames to 256 (memory.py:22-32)."""
    frames = np.concatenate([feats, np.zeros((FRAMES * CLIP_FRAMES - len(feats),) + feats.shape[1:], np.float32)])
    loader = [[{"features": torch.from_numpy(frames[i:i + CLIP_FRAMES])}]
              for i in range(0, len(frames), CLIP_FRAMES)]
    rep = memory.get_prefix_matrix(loader, _FakeModel(), torch.device)
    return rep[0]["key"]


def their_projection(F: np.ndarray, g: torch.Tensor) -> torch.Tensor:
    """feature_data_for_grad.py:110-111 (Uf = F F^T as a float32 Tensor) and hook_grad.py:216-217 (g - g Uf)."""
    Uf = torch.Tensor(np.dot(F, F.transpose()))
    return g - torch.matmul(g, Uf)


def run_authors(memory, feats1, feats2, grads):
    """Steps 1 and 2 of their memory (step 2 accumulates onto step 1's pickled basis), projections of ``grads``."""
    rep1 = their_pca_scores(memory, feats1)
    basis1 = memory.update_memory_prefix({0: {"key": rep1}}, THRESHOLD, {})
    F1 = copy.deepcopy(basis1[0]["key"])
    rep2 = their_pca_scores(memory, feats2)
    basis2 = memory.update_memory_prefix({0: {"key": rep2}}, THRESHOLD, copy.deepcopy(basis1))
    F2 = basis2[0]["key"]
    return {"rank1": int(F1.shape[1]), "rank2": int(F2.shape[1]),
            "projected1": their_projection(F1, grads).numpy(), "projected2": their_projection(F2, grads).numpy(),
            "energy1": _energy_margin(rep1)}


def _energy_margin(rep: np.ndarray) -> list[float]:
    """Cumulative sigma^4 fractions around the cut (how far the threshold is from a tie)."""
    S = np.linalg.svd(rep.astype(np.float64) @ rep.T.astype(np.float64), compute_uv=False)
    cum = np.cumsum(S ** 2) / np.sum(S ** 2)
    r = int(np.sum(cum < THRESHOLD))
    return [float(cum[r - 1]) if r else 0.0, float(cum[r])]


def run_ours(feats1, feats2, grads):
    from hvpl.continual.ogc import project_gradient
    from hvpl.continual.ogc_authors import authors_update

    X1 = torch.from_numpy(feats1.reshape(len(feats1), -1))
    X2 = torch.from_numpy(feats2.reshape(len(feats2), -1))
    M1 = authors_update(X1, None, THRESHOLD)
    M2 = authors_update(X2, M1, THRESHOLD)
    return {"rank1": M1.shape[1], "rank2": M2.shape[1],
            "projected1": project_gradient(grads, M1).numpy(), "projected2": project_gradient(grads, M2).numpy()}


def compare(theirs: dict, ours: dict) -> dict:
    out = {"rank1": [theirs["rank1"], ours["rank1"]], "rank2": [theirs["rank2"], ours["rank2"]]}
    for key in ("projected1", "projected2"):
        diff = np.abs(theirs[key].astype(np.float64) - ours[key])
        out[key] = {"max_abs": float(diff.max()), "max_rel": float(diff.max() / np.abs(theirs[key]).max())}
    return out


def paper_size(memory) -> dict:
    """Their randomized PCA (np.random seeded) vs the exact one at 256 x (105 * 256): projector distance."""
    from hvpl.continual.ogc_authors import authors_update

    feats = seeded_features(3, FRAMES, 105, 256, rank=80, decay=0.97)
    np.random.seed(0)
    rep = their_pca_scores(memory, feats)
    F = memory.update_memory_prefix({0: {"key": rep}}, THRESHOLD, {})[0]["key"].astype(np.float64)
    M = authors_update(torch.from_numpy(feats.reshape(FRAMES, -1)), None, THRESHOLD).double().numpy()
    return {"rank_theirs": F.shape[1], "rank_ours": M.shape[1],
            "projector_frobenius_diff": float(np.linalg.norm(F @ F.T - M @ M.T)) if F.shape == M.shape else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--paper-size", action="store_true")
    args = ap.parse_args(argv)
    from ogc import memory   # the authors' module, from PYTHONPATH (never from the project)

    feats1 = seeded_features(1, FRAMES, QUERIES, CHANNELS, rank=40, decay=0.96)
    feats2 = seeded_features(2, FRAMES, QUERIES, CHANNELS, rank=40, decay=0.96)
    grads = torch.from_numpy(np.random.default_rng(4).standard_normal((PROMPTS + PROBES, FRAMES)).astype(np.float32))
    theirs = run_authors(memory, feats1, feats2, grads)
    report = compare(theirs, run_ours(feats1, feats2, grads))
    if args.paper_size:
        report["paper_size"] = paper_size(memory)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "inputs.npz", features1=feats1, features2=feats2, grads=grads.numpy())
    np.savez_compressed(args.out / "authors.npz", projected1=theirs["projected1"], projected2=theirs["projected2"])
    meta = {"threshold": THRESHOLD, "rank1": theirs["rank1"], "rank2": theirs["rank2"],
            "energy_around_cut_step1": theirs["energy1"], "sklearn": __import__("sklearn").__version__,
            "numpy": np.__version__, "torch": torch.__version__, "comparison": report}
    (args.out / "authors.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
