"""Orthogonal gradient correction (method.md Section 3): a Gradient Projection Memory in feature space.

The basis ``M`` (C, k) spans the channel-space directions that the OLD model's frame-decoder layer-0 features
(after self-attention) occupy. While step t trains, the gradient of the newest frame prompt content (P, C) is
projected onto the orthogonal complement: ``g <- g - g M M^T``.

This is NOT the authors' version: theirs builds a 256 x 256 Gram matrix over memory *frames* (sample space,
after PCA to 50 components) and applies it on the channel axis, which only runs because 256 frames happen to
equal 256 channels; it also uses a sigma^4 energy rule and computes a different basis on every GPU. Here the
basis lives in channel space, uses the sigma^2 energy rule of GPM (Saha et al., ICLR 2021), is computed once
in one process and saved, and every training process loads the same file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import torch

from hvpl.utils.errors import HVPLError
from hvpl.utils.safe_load import load_torch_file


# ----------------------------------------------------------------------------------------------- basis math
def _energy_rank(sq_sing: torch.Tensor, total: float, already: float, threshold: float) -> int:
    """Smallest k with (already + sum_{i<k} sq_sing[i]) / total >= threshold (0 if already reached)."""
    if total <= 0.0:
        return 0
    acc = already / total
    k = 0
    for value in (sq_sing / total).tolist():
        if acc >= threshold:
            break
        acc += value
        k += 1
    return k


def gpm_update(R: torch.Tensor, prev_basis: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """One GPM memory update.

    Args:
        R: (C, N) feature matrix, one C-dimensional feature per column.
        prev_basis: (C, k0) orthonormal basis of earlier tasks, or None (k0 = 0 allowed).
        threshold: energy fraction in (0, 1].
    Returns:
        (C, k) orthonormal basis, float32, k >= k0, k <= C. The first k0 columns are ``prev_basis``.
    """
    if R.dim() != 2:
        raise ValueError(f"R must be (C, N), got shape {tuple(R.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise HVPLError(f"ogc_threshold must be in (0, 1], got {threshold}")
    C = R.shape[0]
    R64 = R.detach().to(torch.float64)
    M = (torch.zeros(C, 0, dtype=torch.float64) if prev_basis is None
         else prev_basis.detach().to(torch.float64))
    if M.shape[0] != C:
        raise HVPLError(f"previous OGC basis has {M.shape[0]} channels, the features have {C}")
    total = float((R64 ** 2).sum())
    if M.shape[1] >= C or total == 0.0:
        return M.to(torch.float32)
    R_hat = R64 - M @ (M.T @ R64)
    already = total - float((R_hat ** 2).sum())
    U, S, _ = torch.linalg.svd(R_hat, full_matrices=False)
    k = min(_energy_rank(S ** 2, total, already, threshold), C - M.shape[1], _numerical_rank(S, total, R.shape, M))
    if k == 0:
        return M.to(torch.float32)
    new = U[:, :k]
    # two more Gram-Schmidt passes against the old basis (M is float32-rounded, so M M^T is a projector only to
    # ~u; each pass squares what is left): keep [M, new] orthonormal to float32 rounding
    for _ in range(2):
        new = new - M @ (M.T @ new)
    new, _ = torch.linalg.qr(new)
    return torch.cat([M, new], dim=1).to(torch.float32)


def _numerical_rank(S: torch.Tensor, total: float, shape, M: torch.Tensor) -> int:
    """Singular values of R_hat above the rounding noise of computing it: the old basis M (C, k0) is orthonormal
    only to float32 rounding (|M^T M - I| <= 2u), which leaves up to ~2u k0 ||R|| of the span in R_hat, and the
    float64 SVD adds ~eps max(C, N) ||R||. Directions below that are noise (e.g. threshold 1 with features inside
    the span): adding them would make the basis non-orthonormal."""
    u32 = torch.finfo(torch.float32).eps / 2
    noise = (2 * u32 * M.shape[1] + torch.finfo(torch.float64).eps * max(shape)) * total ** 0.5
    return int((S > noise).sum())


def project_gradient(g: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Remove the basis span from each row of a gradient.

    Args:
        g: (P, C) gradient of the frame prompt content.
        M: (C, k) orthonormal basis (k = 0 returns ``g`` unchanged).
    Returns:
        (P, C) ``g - g M M^T`` in the dtype of ``g``.
    """
    if M.shape[1] == 0:
        return g
    Mg = M.to(device=g.device, dtype=torch.float32)
    g32 = g.to(torch.float32)
    return (g32 - (g32 @ Mg) @ Mg.T).to(g.dtype)


# ---------------------------------------------------------------------------------------------- basis files
def save_basis(path: Path, basis: torch.Tensor, threshold: float, num_features: int, step: int,
               space: str = "channel") -> None:
    """Write ``{"basis", "energy_threshold", "num_features", "step", "space"}`` atomically (DESIGN.md); ``space``
    is "channel" (this module) or "sample" (the authors' variant, ``ogc_authors.py``)."""
    from hvpl.utils.io import atomic_torch_save

    atomic_torch_save(path, {"basis": basis.detach().to(torch.float32).cpu().contiguous(),
                             "energy_threshold": float(threshold), "num_features": int(num_features),
                             "step": int(step), "space": space})


def load_basis(path: str | Path, channels: int | None = None, step: int | None = None,
               space: str | None = None) -> torch.Tensor:
    """Read a basis file -> (C, k) float32 on CPU; checks its structure, channel count and (given) the step it
    was made for: step t trains with step t's basis, and step t's memory accumulates onto step t-1's; and (given)
    its space (files without the entry are channel-space ones)."""
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: OGC basis file not found")
    data = load_torch_file(path, "OGC basis file")
    basis = data.get("basis") if isinstance(data, dict) else None
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2:
        raise HVPLError(f"{path}: entry 'basis' must be a (C, k) tensor")
    if channels is not None and basis.shape[0] != channels:
        raise HVPLError(f"{path}: entry 'basis' has {basis.shape[0]} channels, the model has {channels}")
    if step is not None and data.get("step") != step:
        raise HVPLError(f"{path}: entry 'step' is {data.get('step')!r}, expected the basis of step {step}")
    if space is not None and data.get("space", "channel") != space:
        raise HVPLError(f"{path}: entry 'space' is {data.get('space', 'channel')!r}, this method needs a {space}-space "
                        f"basis (hvpl_ogc_authors: sample, the other OGC methods: channel)")
    # the authors' sample-space accumulation, reproduced as it is, need not give orthonormal columns (with
    # ogc_threshold 1 it does not): only its values and shape are checked
    check_orthonormal(basis, f"{path}: entry 'basis'", columns=data.get("space", "channel") == "channel")
    return basis.to(torch.float32)


def orthonormal_tolerance() -> float:
    """Largest |M^T M - I| entry a float32 copy of an orthonormal (float64) basis can show.

    Rounding each entry to float32 gives M + E with |E| <= u |M| (u = eps/2, unit roundoff); then
    |(M^T E)_ij| <= u sum_l |M_li| |M_lj| <= u ||m_i|| ||m_j|| = u (Cauchy-Schwarz on unit columns), so
    |M^T M - I| <= 2u + u^2 entrywise. Twice that bound leaves room for the float64 QR's own (~C * 1e-16) error.
    """
    u = torch.finfo(torch.float32).eps / 2
    return 2 * (2 * u + u * u)


def check_orthonormal(basis: torch.Tensor, where: str, columns: bool = True) -> None:
    """A (C, k) basis: floating point, finite, k <= C, and (``columns``) columns orthonormal within
    :func:`orthonormal_tolerance` (Gram matrix in float64); HVPLError naming ``where`` and what is wrong."""
    if not basis.is_floating_point():
        raise HVPLError(f"{where}: dtype {basis.dtype}, expected a floating-point tensor")
    bad = (~torch.isfinite(basis)).sum().item()
    if bad:
        raise HVPLError(f"{where}: {bad} non-finite value(s) (NaN or inf)")
    C, k = basis.shape
    if k > C:
        raise HVPLError(f"{where}: {k} columns for {C} channels; an orthonormal basis has at most {C}")
    if not columns:
        return
    M = basis.to(torch.float64)
    deviation = (M.T @ M - torch.eye(k, dtype=torch.float64)).abs().max().item() if k else 0.0
    if deviation > orthonormal_tolerance():
        raise HVPLError(f"{where}: columns are not orthonormal (max |M^T M - I| = {deviation:.3g}, tolerance "
                        f"{orthonormal_tolerance():.3g})")


class OGCProjector:
    """Projects the gradient of one parameter (P, C) with a fixed basis, after backward, before the step."""

    def __init__(self, param: torch.nn.Parameter, basis: torch.Tensor):
        self.param = param
        self.basis = basis.to(param.device, torch.float32)

    def apply(self) -> None:
        """In place on ``param.grad`` (no-op when there is no gradient)."""
        if self.param.grad is not None:
            self.param.grad.copy_(project_gradient(self.param.grad, self.basis))


# ------------------------------------------------------------------------------------- memory collection
def _same_size_chunks(frames: Iterable[torch.Tensor], chunk: int) -> Iterator[torch.Tensor]:
    """Consecutive frames (3, H, W) stacked into (n <= chunk, 3, H, W) batches of one size."""
    batch: list[torch.Tensor] = []
    for f in frames:
        if batch and (len(batch) == chunk or f.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(f)
    if batch:
        yield torch.stack(batch)


def collect_features(model, frames: Iterable[torch.Tensor], chunk: int) -> torch.Tensor:
    """Layer-0 frame-decoder outputs after self-attention of every query group (all old queries).

    Args:
        model: an HVPLModel (eval mode); every group it has is an old group.
        frames: N frames (3, H, W), 0..255 (a list or an (N, 3, H, W) tensor; sizes may differ).
        chunk: frames per forward pass.
    Returns:
        (C, N * Q_all) feature matrix R, float32 on CPU (one column per (frame, query), frame-major).
    """
    device = next(model.parameters()).device
    cols = []
    groups = list(range(model.num_groups))
    with torch.no_grad():
        for batch in _same_size_chunks(frames, chunk):
            pix = model.trunk(batch.to(device))
            fd = model.frame_decoder(pix["multi_scale_features"], pix["mask_features"], groups=groups,
                                     capture_layer0=True)
            feats = fd["layer0_self_attn"].float()        # (n, Q_all, C)
            cols.append(feats.reshape(-1, feats.shape[-1]).cpu())
    return torch.cat(cols, 0).T.contiguous()


def _memory_dataset(cfg: dict, prev: dict, train_json: Path, seed: int):
    """A one-frame, unaugmented ClipDataset of step t-1's training JSON, checked to hold step t-1's classes."""
    from hvpl.data.clip_dataset import ClipDataset

    ds = ClipDataset(train_json, 1, 0, cfg["scenario"]["input"], train=False, seed=seed,
                     class_order=prev["class_order"])
    last_task = list(prev["class_order"])[-int(prev["classes_per_task"][-1]):]
    ids = sorted(c["id"] for c in ds.data["categories"])
    if ids != sorted(last_task):
        raise HVPLError(f"{train_json}: categories {ids} are not the classes {sorted(last_task)} of the model's "
                        f"step {prev['step']}; the memory of step t reads step t-1's training JSON")
    return ds


def _memory_frames(ds, num: int) -> Iterator[torch.Tensor]:
    """``num`` frames (3, H, W) 0..255 of ``ds`` at the test size, one at a time: draw i = a random frame of the
    i-th video of a seeded permutation (cycling when ``num`` exceeds the number of videos)."""
    for i in range(num):
        yield ds[i]["images"][0]


def _check_memory_inputs(cfg: dict, prev: dict, step: int, prev_model, prev_basis) -> None:
    from hvpl.continual.methods import get_method

    method, scenario = get_method(cfg["method"]), cfg["scenario"]["name"]
    if not method.ogc:
        raise HVPLError(f"ogc-memory --method {method.name}: this method does not use OGC")
    if prev.get("scenario", {}).get("name") != scenario:
        raise HVPLError(f"{prev_model}: a model of scenario '{prev.get('scenario', {}).get('name')}', "
                        f"not '{scenario}'")
    if int(prev["step"]) != step - 1:
        raise HVPLError(f"{prev_model}: entry 'step' is {prev['step']}, the step-{step} memory needs step {step - 1}")
    if step > 1 and prev_basis is None:
        raise HVPLError(f"ogc-memory --step {step}: --prev-basis (step t-1's ogc_basis.pt) is required from step 2 on")
    if step == 1 and prev_basis is not None:
        raise HVPLError("ogc-memory --step 1: step 1 has no --prev-basis")


def build_memory(cfg: dict, *, step: int, prev_model, train_json, prev_basis=None, out, seed: int = 0,
                 device: str = "cpu", threads: int | None = None) -> torch.Tensor:
    """Step ``step``'s OGC basis from the step-(t-1) model over ``ogc_samples`` frames of step t-1's training
    data, accumulated onto ``prev_basis`` (step t-1's file, t >= 2); written to ``out`` atomically.

    Returns the (C, k) basis.
    """
    from hvpl.continual.methods import get_method
    from hvpl.continual.ogc_authors import authors_update, frame_vectors, memory_frames
    from hvpl.engine.distributed import resolve_device
    from hvpl.engine.authors_checkpoint import load_model_or_authors
    from hvpl.engine.model_file import rebuild_model
    from hvpl.utils.logging import log

    if threads:
        torch.set_num_threads(int(threads))
    if step < 1:
        raise HVPLError(f"ogc-memory --step {step}: the OGC memory exists for steps >= 1")
    method = get_method(cfg["method"])
    train = cfg["scenario"]["train"]
    threshold = float(train["ogc_threshold"])
    space = "sample" if method.ogc_authors else "channel"
    prev = load_model_or_authors(prev_model, cfg, step - 1, Path(train_json).parent / "classes.json")
    _check_memory_inputs(cfg, prev, step, prev_model, prev_basis)
    dataset = _memory_dataset(cfg, prev, Path(train_json), seed)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = rebuild_model(prev).to(dev).eval()
    old = None if prev_basis is None else load_basis(prev_basis, channels=model.frame_decoder.hidden_dim,
                                                     step=step - 1, space=space)
    # the authors' variant: as many frames as channels (ogc_authors.py), ogc_samples otherwise
    num = memory_frames(model.frame_decoder.hidden_dim) if method.ogc_authors else int(train["ogc_samples"])
    R = collect_features(model, _memory_frames(dataset, num), max(1, int(model.chunk_frames)))
    if method.ogc_authors:
        basis = authors_update(frame_vectors(R, num), old, threshold)
    else:
        basis = gpm_update(R, old, threshold)
    save_basis(Path(out), basis, threshold, R.shape[1], step, space=space)
    log(f"{out}: OGC basis {tuple(basis.shape)} ({space} space) from {R.shape[1]} features of {num} frames "
        f"({0 if old is None else old.shape[1]} columns carried over)")
    return basis
