"""The authors' OGC (JiahuaDong/HVPL ``ogc/``), selectable as the method ``hvpl_ogc_authors``.

Known difference 1 of method.md: their basis lives in *sample* space. Per memory frame they flatten the
frame decoder's layer-0 output after self-attention over every old query, (Q_all, C) -> one Q_all*C vector;
N = 256 such frames go through PCA to 50 components (``ogc/memory.py get_prefix_matrix``), whose N x N Gram
matrix is decomposed with a sigma^4 energy rule and accumulated across tasks as in GPM
(``update_memory_prefix``). The resulting (N, r) basis F is applied on the *channel* axis of the newest prompt
content gradient, ``g <- g - g F F^T`` (``ogc/hook_grad.py AMPTrainer_grad.run_step``), which is only defined
because their N (256, hard-coded) equals their C (256). This module reproduces that computation; the channel-space
GPM of the paper stays in ``ogc.py``.

How the variant generalises: it draws exactly N = C memory frames (their 256 is C at paper size), so
``ogc_samples`` is not read; C must be at least ``PCA_COMPONENTS``. Their PCA is sklearn's ``PCA(50)``, whose
default solver is randomized (and unseeded) on inputs wider than 500 columns (always at paper size); here the
exact top-50 PCA is computed, which that solver approximates. Their basis is computed separately on every GPU
from that GPU's data; here once, for every process (docs/training.md).
"""
from __future__ import annotations

import torch

from hvpl.utils.errors import HVPLError

# ogc/memory.py: PCA(n_components=50), a constant of their code (not a function of any model size)
PCA_COMPONENTS = 50


def frame_vectors(R: torch.Tensor, frames: int) -> torch.Tensor:
    """The authors' per-frame sample vectors from hvpl's feature matrix.

    Args:
        R: (C, frames * Q_all) from ``ogc.collect_features`` (one column per (frame, query), frame-major).
        frames: number of frames N.
    Returns:
        (N, Q_all * C): row n = frame n's (Q_all, C) layer-0 features flattened query-major, as their
        ``permute(1, 0, 2)`` + ``reshape(N, -1)``.
    """
    C, cols = R.shape
    if frames <= 0 or cols % frames:
        raise ValueError(f"{cols} feature columns are not a whole number of {frames} frames")
    return R.T.reshape(frames, cols // frames * C)


def pca_scores(X: torch.Tensor, components: int = PCA_COMPONENTS) -> torch.Tensor:
    """Exact PCA scores, as sklearn's ``PCA(components).fit(X).transform(X)`` up to the sign of each component.

    Args:
        X: (N, D) samples.
    Returns:
        (N, components) float64: centred X on its top principal directions.
    """
    N, D = X.shape
    if components > min(N, D):
        raise HVPLError(f"PCA to {components} components needs at least {components} samples and features, "
                        f"got {N} x {D}")
    X64 = X.detach().to(torch.float64)
    U, S, _ = torch.linalg.svd(X64 - X64.mean(0, keepdim=True), full_matrices=False)
    return U[:, :components] * S[:components]


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise HVPLError(f"ogc_threshold must be in (0, 1], got {threshold}")


def first_basis(G: torch.Tensor, threshold: float) -> torch.Tensor:
    """First task: the r leading left singular vectors of the Gram matrix G (N, N), r = the number of
    cumulative sigma(G)^2 energy fractions strictly below ``threshold`` (their ``np.sum(cumsum < t)``: one column
    fewer than the smallest count that reaches it). Returns (N, r) float64."""
    U, S, _ = torch.linalg.svd(G, full_matrices=False)
    energy = S ** 2
    total = float(energy.sum())
    if total == 0.0:
        return G.new_zeros(G.shape[0], 0)
    r = int((torch.cumsum(energy / total, 0) < threshold).sum())
    return U[:, :r]


def accumulated_basis(G: torch.Tensor, F: torch.Tensor, threshold: float) -> torch.Tensor:
    """Later task: their GPM update in sample space, no re-orthogonalisation, at most N columns.

    Args:
        G: (N, N) Gram matrix of this task's PCA scores.
        F: (N, r0) the previous task's basis.
    Returns:
        (N, r0 + r) float64, truncated to N columns: [F, leading left singular vectors of G - F F^T G], r added
        while (energy of G captured by F + added sigma^2 fractions) < threshold, fractions of sigma(G)^2 total.
    """
    if F.shape[0] != G.shape[0]:
        raise HVPLError(f"previous OGC basis has {F.shape[0]} rows, this memory has {G.shape[0]} samples")
    _, S1, _ = torch.linalg.svd(G, full_matrices=False)
    total = float((S1 ** 2).sum())
    if total == 0.0:
        return F
    U, S, _ = torch.linalg.svd(G - F @ (F.T @ G), full_matrices=False)
    ratios = ((S ** 2) / total).tolist()
    accumulated = (total - float((S ** 2).sum())) / total
    r = 0
    for value in ratios:
        if accumulated >= threshold:
            break
        accumulated += value
        r += 1
    out = torch.cat([F, U[:, :r]], dim=1)
    return out[:, :out.shape[0]]


def authors_update(X: torch.Tensor, prev_basis: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """One memory update of the authors' OGC.

    Args:
        X: (N, D) one flattened layer-0 feature vector per memory frame (``frame_vectors``).
        prev_basis: (N, r0) the previous step's basis, or None at step 1.
        threshold: energy fraction in (0, 1].
    Returns:
        (N, r) float32 sample-space basis; the projection ``g - g F F^T`` (``ogc.project_gradient``) applies it
        to a (P, C) gradient only when N == C.
    """
    _check_threshold(threshold)
    scores = pca_scores(X)
    G = scores @ scores.T
    if prev_basis is None:
        return first_basis(G, threshold).to(torch.float32)
    return accumulated_basis(G, prev_basis.detach().to(torch.float64), threshold).to(torch.float32)


def memory_frames(channels: int) -> int:
    """Frames the variant draws: N = C (their hard-coded 256 at C = 256), the only N for which their sample-space
    projection applies to the C channels; C below the PCA size is refused."""
    if channels < PCA_COMPONENTS:
        raise HVPLError(f"model.hidden_dim: hvpl_ogc_authors needs at least {PCA_COMPONENTS} channels (PCA to "
                        f"{PCA_COMPONENTS} components of C memory frames), got {channels}")
    return channels
