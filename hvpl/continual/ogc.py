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

import torch

from hvpl.utils.errors import HVPLError


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
    k = min(_energy_rank(S ** 2, total, already, threshold), C - M.shape[1])
    if k == 0:
        return M.to(torch.float32)
    new = U[:, :k]
    # one more Gram-Schmidt pass against the old basis: keeps [M, new] orthonormal to machine precision
    new = new - M @ (M.T @ new)
    new, _ = torch.linalg.qr(new)
    return torch.cat([M, new], dim=1).to(torch.float32)


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
def save_basis(path: Path, basis: torch.Tensor, threshold: float, num_features: int, step: int) -> None:
    """Write ``{"basis", "energy_threshold", "num_features", "step"}`` atomically (DESIGN.md)."""
    from hvpl.utils.io import atomic_torch_save

    atomic_torch_save(path, {"basis": basis.detach().to(torch.float32).cpu().contiguous(),
                             "energy_threshold": float(threshold), "num_features": int(num_features),
                             "step": int(step)})


def load_basis(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """Read a basis file -> (C, k) float32 on CPU; checks its structure and channel count."""
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: OGC basis file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise HVPLError(f"{path}: not a readable OGC basis file ({exc})") from exc
    basis = data.get("basis") if isinstance(data, dict) else None
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2:
        raise HVPLError(f"{path}: entry 'basis' must be a (C, k) tensor")
    if channels is not None and basis.shape[0] != channels:
        raise HVPLError(f"{path}: entry 'basis' has {basis.shape[0]} channels, the model has {channels}")
    return basis.to(torch.float32)


class OGCProjector:
    """Projects the gradient of one parameter (P, C) with a fixed basis, after backward, before the step."""

    def __init__(self, param: torch.nn.Parameter, basis: torch.Tensor):
        self.param = param
        self.basis = basis.to(param.device, torch.float32)

    def apply(self) -> None:
        """In place on ``param.grad`` (no-op when there is no gradient)."""
        if self.param.grad is not None:
            self.param.grad.copy_(project_gradient(self.param.grad, self.basis))

