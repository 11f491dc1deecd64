"""OGC: GPM basis in channel space, gradient projection, basis files (method.md Section 3)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from hvpl.continual.ogc import gpm_update, load_basis, project_gradient, save_basis
from hvpl.utils.errors import HVPLError
from model_files import save_untrained

torch.set_num_threads(1)


def _orthonormal(C: int, k: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((C, k)))
    return q


def _features(U: np.ndarray, sing: list[float], N: int, seed: int) -> torch.Tensor:
    """R = U diag(sing) V^T with V (N, k) orthonormal: exact singular values ``sing``."""
    V = _orthonormal(N, len(sing), seed)
    return torch.from_numpy(U @ np.diag(sing) @ V.T)


def _projector(M) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    return M @ M.T


def test_projection_leaves_nothing_in_the_span():
    C, P = 32, 7
    M = torch.from_numpy(_orthonormal(C, 9, 0)).float()
    g = torch.randn(P, C, generator=torch.Generator().manual_seed(1))
    out = project_gradient(g, M)
    inside = (out.double() @ M.double()).norm() / g.double().norm()
    assert inside < 1e-6
    # the part orthogonal to the span is untouched: out == g (I - M M^T) computed in numpy
    ref = g.double().numpy() @ (np.eye(C) - _projector(M))
    np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-5)


def test_empty_basis_is_identity():
    g = torch.randn(3, 8)
    assert torch.equal(project_gradient(g, torch.zeros(8, 0)), g)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9, 0.99])
def test_threshold_keeps_smallest_k_reaching_it(threshold):
    C, N = 16, 40
    sing = [10.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5]
    U = _orthonormal(C, len(sing), 2)
    R = _features(U, sing, N, 3)
    energy = np.cumsum(np.square(sing)) / np.sum(np.square(sing))
    expected_k = int(np.argmax(energy >= threshold)) + 1
    M = gpm_update(R, None, threshold)
    assert M.shape == (C, expected_k)
    np.testing.assert_allclose(M.double().T @ M.double(), np.eye(expected_k), atol=1e-5)
    np.testing.assert_allclose(_projector(M), _projector(U[:, :expected_k]), atol=1e-5)


def test_accumulation_only_adds_directions_outside_the_previous_span():
    C, N = 24, 50
    U = _orthonormal(C, 10, 4)
    R1 = _features(U[:, :3], [5.0, 4.0, 3.0], N, 5)
    M1 = gpm_update(R1, None, 0.999)
    assert M1.shape[1] == 3
    # task 2: energy mostly in the old span plus two new directions
    R2 = _features(U[:, [0, 1, 5, 6]], [6.0, 5.0, 3.0, 2.0], N, 6)
    M2 = gpm_update(R2, M1, 0.999)
    assert torch.equal(M2[:, :3], M1)
    new = M2[:, 3:].double().numpy()
    assert new.shape[1] == 2
    np.testing.assert_allclose(M1.double().numpy().T @ new, 0.0, atol=1e-6)
    np.testing.assert_allclose(_projector(new), _projector(U[:, 5:7]), atol=1e-5)
    # energy already captured by the old basis: nothing added
    R3 = _features(U[:, :2], [3.0, 1.0], N, 7)
    assert torch.equal(gpm_update(R3, M2, 0.9), M2)


def test_accumulated_energy_rule_uses_the_original_features():
    """Old span holds 60% of R's energy; threshold 0.8 needs new directions worth >= 20% more."""
    C, N = 12, 30
    U = _orthonormal(C, 6, 8)
    M1 = torch.from_numpy(U[:, :1]).float()
    sing = [np.sqrt(60.0), np.sqrt(15.0), np.sqrt(10.0), np.sqrt(10.0), np.sqrt(5.0)]  # energies 60/15/10/10/5
    R = _features(U[:, :5], sing, N, 9)
    M = gpm_update(R, M1, 0.8)
    assert M.shape[1] == 1 + 2  # 60 + 15 = 75 < 80, + 10 = 85 >= 80


def test_basis_is_capped_at_C_columns():
    C = 6
    R = torch.randn(C, 40, generator=torch.Generator().manual_seed(0))
    M = gpm_update(R, None, 1.0)
    assert M.shape[1] <= C
    M2 = gpm_update(torch.randn(C, 40), M, 1.0)
    assert M2.shape[1] <= C
    np.testing.assert_allclose(M2.double().T @ M2.double(), np.eye(M2.shape[1]), atol=1e-5)


def test_gradient_inside_old_feature_subspace_is_removed():
    C, N, P = 20, 64, 5
    U = _orthonormal(C, 4, 10)
    R = _features(U, [4.0, 3.0, 2.0, 1.0], N, 11)
    M = gpm_update(R, None, 0.9999)
    coeffs = torch.randn(P, N, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    g = (coeffs @ R.T).float()        # every row a combination of old features
    assert project_gradient(g, M).norm() / g.norm() < 1e-5
    # and a direction orthogonal to every old feature survives untouched
    v = torch.from_numpy(np.linalg.svd(R.numpy(), full_matrices=True)[0][:, -1]).float()[None]
    torch.testing.assert_close(project_gradient(v, M), v, atol=1e-6, rtol=0)


def test_bad_threshold_and_channel_mismatch_raise():
    with pytest.raises(HVPLError):
        gpm_update(torch.randn(4, 5), None, 0.0)
    with pytest.raises(HVPLError):
        gpm_update(torch.randn(4, 5), torch.zeros(3, 1), 0.7)


def test_basis_file_round_trip_and_errors(tmp_path):
    M = gpm_update(torch.randn(8, 30), None, 0.7)
    path = tmp_path / "ogc_basis.pt"
    save_basis(path, M, 0.7, 30, 1)
    data = torch.load(path, weights_only=True)
    assert set(data) == {"basis", "energy_threshold", "num_features", "step", "space"} and data["space"] == "channel"
    assert torch.equal(load_basis(path, channels=8), M)
    assert torch.equal(load_basis(path, step=1), M)
    with pytest.raises(HVPLError, match="expected the basis of step 2"):   # another step's file
        load_basis(path, step=2)
    with pytest.raises(HVPLError, match="channels"):
        load_basis(path, channels=9)
    with pytest.raises(HVPLError, match="not found"):
        load_basis(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(HVPLError, match="junk.pt"):
        load_basis(tmp_path / "junk.pt")


def _write_basis(path, basis, step=1):
    """A basis file as save_basis writes it, with any tensor as its basis (no checks on the way out)."""
    torch.save({"basis": basis, "energy_threshold": 0.7, "num_features": 30, "step": step}, path)
    return path


def test_bases_from_gpm_update_pass_the_orthonormality_check_at_every_step():
    """The tolerance is not tighter than what float32 storage of an exactly orthonormal basis gives: 12 steps of
    accumulation at the paper's width (each step's basis read back as float32, as from its file)."""
    from hvpl.continual.ogc import check_orthonormal, orthonormal_tolerance

    gen = torch.Generator().manual_seed(5)
    M, C = None, 256
    for threshold in [0.7, 0.97, 0.999] * 4:
        R = torch.randn(C, 40, generator=gen) @ torch.randn(40, 300, generator=gen)
        if M is not None:
            R = R + 10 * M @ torch.randn(M.shape[1], 300, generator=gen)   # partly inside the old span
        M = gpm_update(R, M, threshold)
        check_orthonormal(M, "step")
        gram = M.double().T @ M.double()
        assert (gram - torch.eye(M.shape[1], dtype=torch.float64)).abs().max() < orthonormal_tolerance()
    assert M.shape[1] > 200


def test_threshold_one_adds_no_rounding_noise_directions():
    """Features inside the old span with threshold 1: the residual is rounding noise, and its directions are not
    added (they used to be, 185 columns deviating from orthonormal by 0.4)."""
    from hvpl.continual.ogc import check_orthonormal

    gen = torch.Generator().manual_seed(6)
    M = gpm_update(torch.randn(256, 100, generator=gen, dtype=torch.float64), None, 0.9)
    R = M.double() @ torch.randn(M.shape[1], 500, generator=gen, dtype=torch.float64)
    out = gpm_update(R, M, 1.0)
    assert torch.equal(out, M)
    check_orthonormal(gpm_update(R + 1e-3 * torch.randn(256, 500, generator=gen, dtype=torch.float64), M, 1.0), "")


@pytest.mark.parametrize("make, message", [
    (lambda M: M * 1.5, "columns are not orthonormal \\(max \\|M\\^T M - I\\| = 1.25"),
    (lambda M: M + 1e-3 * torch.ones_like(M), "columns are not orthonormal"),
    (lambda M: torch.where(torch.arange(M.numel()).reshape(M.shape) == 3, float("nan"), M),
     "1 non-finite value\\(s\\)"),
    (lambda M: torch.full_like(M, float("inf")), "32 non-finite"),
    (lambda M: torch.eye(8, 9), "9 columns for 8 channels"),
    (lambda M: M.to(torch.int64), "dtype torch.int64, expected a floating-point tensor"),
])
def test_a_basis_file_that_is_not_an_orthonormal_basis_is_refused(tmp_path, make, message):
    M = gpm_update(torch.randn(8, 30, generator=torch.Generator().manual_seed(1)), None, 0.7)
    path = _write_basis(tmp_path / "ogc_basis.pt", make(M))
    with pytest.raises(HVPLError, match=f"{path}: entry 'basis': {message}"):
        load_basis(path, channels=8, step=1)


def test_a_sample_space_basis_is_checked_for_values_and_shape_only(tmp_path):
    """The authors' accumulation (hvpl_ogc_authors), reproduced as it is, is not orthonormal with threshold 1."""
    M = torch.eye(8, 3) * 2
    path = tmp_path / "b.pt"
    torch.save({"basis": M, "energy_threshold": 1.0, "num_features": 8, "step": 2, "space": "sample"}, path)
    assert torch.equal(load_basis(path, step=2, space="sample"), M)
    torch.save({"basis": M * float("nan"), "energy_threshold": 1.0, "num_features": 8, "step": 2,
                "space": "sample"}, path)
    with pytest.raises(HVPLError, match="24 non-finite"):
        load_basis(path, step=2, space="sample")


def test_cli_refuses_a_bad_basis_in_train_and_ogc_memory(tiny_split_dir, tmp_path, capsys):
    """`ogc-memory --prev-basis` and `train --ogc-basis`: exit 2 naming the file, before any output."""
    from hvpl.cli import main
    from hvpl.config import load_run_config

    sets = ["model.frame_decoder.num_queries=6"]
    cfg = load_run_config("synth_smoke", "hvpl", None, sets)
    m0 = save_untrained(cfg, 0, tiny_split_dir / "train_step0.json", None, tmp_path / "m0.pth")
    save_untrained(cfg, 1, tiny_split_dir / "train_step1.json", m0, tmp_path / "m1.pth")
    C = cfg["model"]["hidden_dim"]
    skewed = torch.linalg.qr(torch.randn(C, 5, generator=torch.Generator().manual_seed(2)))[0] * 2
    common = ["--scenario", "synth_smoke", "--set", sets[0]]
    for step, argv in [(1, ["ogc-memory", *common, "--step", "2", "--prev-model", str(tmp_path / "m1.pth"),
                            "--train-json", str(tiny_split_dir / "train_step1.json"), "--out", str(tmp_path / "b.pt")]),
                       (1, ["train", *common, "--step", "1", "--prev-model", str(tmp_path / "m0.pth"), "--train-json",
                            str(tiny_split_dir / "train_step1.json"), "--out-dir", str(tmp_path / "s1")])]:
        for bad, message in [(skewed, "columns are not orthonormal"), (skewed * float("nan"), f"{C * 5} non-finite")]:
            basis = _write_basis(tmp_path / "prev.pt", bad.float(), step=step)
            flag = "--prev-basis" if argv[0] == "ogc-memory" else "--ogc-basis"
            assert main([*argv, flag, str(basis)]) == 2
            err = capsys.readouterr().err.splitlines()
            assert err[-1].startswith(f"error: {basis}: entry 'basis': {message}") and "Traceback" not in err
            assert not (tmp_path / "b.pt").exists() and not (tmp_path / "s1" / "model_final.pth").exists()


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from hvpl.continual.ogc import load_basis, project_gradient
g = torch.load(sys.argv[2], weights_only=True)
out = project_gradient(g, load_basis(sys.argv[1]))
torch.save(out, sys.argv[3])
"""


def test_same_basis_file_gives_same_projection_in_every_process(tmp_path):
    M = gpm_update(torch.randn(16, 50, generator=torch.Generator().manual_seed(3)), None, 0.8)
    save_basis(tmp_path / "b.pt", M, 0.8, 50, 1)
    g = torch.randn(4, 16, generator=torch.Generator().manual_seed(4))
    torch.save(g, tmp_path / "g.pt")
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "b.pt"), str(tmp_path / "g.pt"),
                               str(tmp_path / f"out{r}.pt")]) for r in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    outs = [torch.load(tmp_path / f"out{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0], project_gradient(g, load_basis(tmp_path / "b.pt")))


# ----------------------------------------------------------------------------------------- build_memory
def test_build_memory_collects_old_queries_and_accumulates(tiny_split_dir, tmp_path):
    from hvpl.config import load_run_config
    from hvpl.continual.ogc import build_memory, collect_features
    from hvpl.engine.model_file import rebuild_model

    cfg = load_run_config("synth_smoke", "hvpl", None, ["model.frame_decoder.num_queries=6",
                                                        "scenario.train.ogc_samples=5"])
    m0 = save_untrained(cfg, 0, tiny_split_dir / "train_step0.json", None, tmp_path / "m0.pth")
    m1 = save_untrained(cfg, 1, tiny_split_dir / "train_step1.json", m0, tmp_path / "m1.pth")
    b1 = build_memory(cfg, step=1, prev_model=tmp_path / "m0.pth", train_json=tiny_split_dir / "train_step0.json",
                      out=tmp_path / "b1.pt")
    saved = torch.load(tmp_path / "b1.pt", weights_only=True)
    C, Q, P = cfg["model"]["hidden_dim"], 6, cfg["scenario"]["prompts_per_task"]
    assert saved["step"] == 1 and saved["energy_threshold"] == 0.7 and saved["num_features"] == 5 * Q
    assert torch.equal(saved["basis"], b1) and b1.shape[0] == C and 1 <= b1.shape[1] < C
    np.testing.assert_allclose(b1.double().T @ b1.double(), np.eye(b1.shape[1]), atol=1e-5)

    # R from the step-1 model (base + prompt group 1) equals the layer-0 outputs of each group run alone
    model = rebuild_model(m1).eval()
    frames = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 255
    R = collect_features(model, frames, chunk=1)
    assert R.shape == (C, 2 * (Q + P))
    with torch.no_grad():
        pix = model.trunk(frames)
        memory = model.frame_decoder.prepare_memory(pix["multi_scale_features"])
        per_group = [model.frame_decoder.run_group(g, memory, pix["mask_features"], capture_layer0=True)
                     ["layer0_self_attn"] for g in range(2)]
    manual = torch.cat(per_group, 1).reshape(-1, C).T
    torch.testing.assert_close(R, manual, atol=1e-5, rtol=1e-5)

    # step 2: accumulated onto step 1's basis; the features' energy in the basis reaches the threshold
    b2 = build_memory(cfg, step=2, prev_model=tmp_path / "m1.pth", train_json=tiny_split_dir / "train_step1.json",
                      prev_basis=tmp_path / "b1.pt", out=tmp_path / "b2.pt")
    assert torch.equal(b2[:, :b1.shape[1]], b1)
    with pytest.raises(HVPLError, match="needs step 1"):
        build_memory(cfg, step=2, prev_model=tmp_path / "m0.pth", train_json=tiny_split_dir / "train_step0.json",
                     out=tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_build_memory_refuses_inconsistent_inputs(tiny_split_dir, tmp_path):
    from hvpl.config import load_run_config
    from hvpl.continual.ogc import build_memory

    sets = ["model.frame_decoder.num_queries=6", "scenario.train.ogc_samples=2"]
    cfg = load_run_config("synth_smoke", "hvpl", None, sets)
    m0 = save_untrained(cfg, 0, tiny_split_dir / "train_step0.json", None, tmp_path / "m0.pth")
    save_untrained(cfg, 1, tiny_split_dir / "train_step1.json", m0, tmp_path / "m1.pth")
    split = tiny_split_dir
    cases = [
        (dict(cfg=load_run_config("synth_smoke", "finetune", None, sets), step=1, prev_model=tmp_path / "m0.pth",
              train_json=split / "train_step0.json"), "does not use OGC"),
        (dict(cfg=load_run_config("synth_4-2", "hvpl", None, sets), step=1, prev_model=tmp_path / "m0.pth",
              train_json=split / "train_step0.json"), "a model of scenario 'synth_smoke', not 'synth_4-2'"),
        (dict(cfg=cfg, step=1, prev_model=tmp_path / "m0.pth", train_json=split / "train_step1.json"),
         "train_step1.json: categories"),
        (dict(cfg=cfg, step=2, prev_model=tmp_path / "m1.pth", train_json=split / "train_step1.json"),
         "--prev-basis .* is required from step 2 on"),
        (dict(cfg=cfg, step=1, prev_model=tmp_path / "m0.pth", train_json=split / "train_step0.json",
              prev_basis=tmp_path / "none.pt"), "step 1 has no --prev-basis"),
    ]
    for kwargs, message in cases:
        with pytest.raises(HVPLError, match=message):
            build_memory(out=tmp_path / "bad.pt", **kwargs)
        assert not (tmp_path / "bad.pt").exists()


def test_collect_features_handles_frames_of_different_sizes(tiny_split_dir, tmp_path):
    from hvpl.config import load_run_config
    from hvpl.continual.ogc import collect_features
    from hvpl.engine.model_file import rebuild_model

    cfg = load_run_config("synth_smoke", "hvpl", None, ["model.frame_decoder.num_queries=4"])
    m0 = save_untrained(cfg, 0, tiny_split_dir / "train_step0.json", None, tmp_path / "m0.pth")
    model = rebuild_model(m0).eval()
    g = torch.Generator().manual_seed(1)
    frames = [torch.rand(3, 48, 48, generator=g) * 255, torch.rand(3, 40, 56, generator=g) * 255,
              torch.rand(3, 48, 48, generator=g) * 255]
    R = collect_features(model, frames, chunk=8)
    assert R.shape == (cfg["model"]["hidden_dim"], 3 * 4)
    one_by_one = torch.cat([collect_features(model, [f], chunk=1) for f in frames], 1)
    torch.testing.assert_close(R, one_by_one, atol=1e-5, rtol=1e-5)
