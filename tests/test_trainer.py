"""train_step: outputs, trainable set, OGC projection, non-finite loss, exact resume, 1 vs 2 processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvpl.config import load_run_config
from hvpl.continual.ogc import gpm_update, save_basis
from hvpl.engine import step_plan
from hvpl.engine import trainer as tr
from hvpl.engine.distributed import DistInfo
from hvpl.engine.model_file import FINAL_NAME, LOG_NAME, load_model_file
from hvpl.utils.errors import HVPLError

# a smaller tiny model: fast enough for the default suite
SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6", "model.loss.num_points=48",
         "scenario.train.batch_size=2", "scenario.train.log_period=2", "scenario.train.checkpoint_period=2"]


def _cfg(method="hvpl", *extra):
    return load_run_config("synth_smoke", method, None, SMALL + list(extra))


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Crash(RuntimeError):
    pass


def _crash_after(k):
    def hook(i):
        if i == k:
            raise _Crash(f"simulated crash after iteration {i}")
    return hook


@pytest.fixture(scope="module")
def step0_model(tiny_split_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("step0") / "step0"
    cfg = _cfg("hvpl", "scenario.train.step0_iters=3", "scenario.train.step0_lr_drop=2")
    tr.train_step(cfg, step=0, train_json=tiny_split_dir / "train_step0.json", out_dir=out, seed=0)
    return out / FINAL_NAME


def test_step0_outputs_follow_the_design(step0_model):
    ckpt = load_model_file(step0_model)
    for key in ("model", "model_config", "scenario", "method", "step", "classes_per_task", "class_order",
                "trainable_params", "total_params", "train_seconds", "iterations"):
        assert key in ckpt
    assert ckpt["step"] == 0 and ckpt["classes_per_task"] == [2] and ckpt["class_order"] == [1, 2]
    assert ckpt["iterations"] == 3 and ckpt["trainable_params"] == ckpt["total_params"]
    lines = [json.loads(x) for x in (step0_model.parent / LOG_NAME).read_text().splitlines()]
    assert [x["iter"] for x in lines[:-1]] == [2, 3]          # log_period 2 + the last iteration
    assert lines[0]["lr"] == pytest.approx(3e-4) and lines[1]["lr"] == pytest.approx(3e-5)  # drop at 2
    for line in lines[:-1]:
        terms = {k: v for k, v in line.items() if k.startswith(("frame_", "video_"))}
        assert terms and line["loss"] == pytest.approx(sum(terms.values()), rel=1e-5)
        assert line["time"] >= 0
    done = lines[-1]
    assert done["event"] == "done" and done["iterations"] == 3
    assert done["trainable_params"] == ckpt["trainable_params"] and done["total_params"] == ckpt["total_params"]
    assert done["init_weights"] == "scratch"
    # checkpoints lived in the sibling folder (not next to the declared outputs) and gave way to the finished
    # record: hard links to the outputs and its fingerprint
    record = tr.default_ckpt_dir(step0_model.parent)
    assert sorted(p.name for p in record.iterdir()) == ["finished.json", f"finished_{FINAL_NAME}",
                                                         f"finished_{LOG_NAME}"]
    assert (record / f"finished_{FINAL_NAME}").samefile(step0_model)
    assert sorted(p.name for p in step0_model.parent.iterdir()) == sorted([LOG_NAME, FINAL_NAME])


def _basis(tmp_path, cfg, rank=5):
    C = cfg["model"]["hidden_dim"]
    M = gpm_update(torch.randn(C, 50, generator=torch.Generator().manual_seed(0)), None, 0.7)[:, :rank]
    save_basis(tmp_path / "ogc_basis.pt", M, 0.7, 50, 1)
    return tmp_path / "ogc_basis.pt", M


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")   # the spy below
def test_prompt_step_trains_only_its_set_and_projects_the_prompt_gradient(step0_model, tiny_split_dir, tmp_path):
    cfg = _cfg("hvpl", "scenario.train.inc_iters=2")
    basis_path, M = _basis(tmp_path, cfg)
    prev = load_model_file(step0_model)
    plan, dataset = step_plan.plan_step(cfg, 1, tiny_split_dir / "train_step1.json", prev, seed=0)
    assert plan.classes_per_task == [2, 2] and plan.class_order == [1, 2, 3, 4] and not plan.lr_drop
    model = step_plan.build_step_model(cfg, plan, prev)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    trainer = tr.StepTrainer(cfg, plan, model, dataset, info, seed=0, out_dir=tmp_path / "o",
                             ckpt_dir=tmp_path / "c", basis=M, fingerprint="x")
    content = model.frame_decoder.prompts[0].content
    seen = []
    step_fn = trainer.optimizer.step

    def spy():
        seen.append(content.grad.detach().clone())
        return step_fn()
    trainer.optimizer.step = spy
    trainer.run()
    assert seen and all(g.abs().sum() > 0 for g in seen)
    for g in seen:   # after projection (and clipping, a scalar factor) nothing is left in the basis span
        assert (g.double() @ M.double()).norm() / g.norm() < 1e-5
    # frozen weights unchanged bit-for-bit, the trainable set changed
    after = model.state_dict()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("frame_classifier", "video_classifier", "frame_decoder.prompts.0",
                                       "video_decoder.prompts.0")) for n in names)
    for name, value in prev["model"].items():
        if name not in names:
            assert torch.equal(after[name], value), name
    assert any(not torch.equal(after[n], prev["model"][n]) for n in names if n in prev["model"])


def test_nonfinite_loss_names_iteration_and_terms(step0_model, tiny_split_dir, tmp_path):
    cfg = _cfg("hvpl", "scenario.train.step0_iters=2")
    plan, dataset = step_plan.plan_step(cfg, 0, tiny_split_dir / "train_step0.json", None, seed=0)
    model = step_plan.build_step_model(cfg, plan, None)
    trainer = tr.StepTrainer(cfg, plan, model, dataset, DistInfo(0, 1, 0, torch.device("cpu")), seed=0,
                             out_dir=tmp_path, ckpt_dir=tmp_path, basis=None, fingerprint="x")
    real = trainer.criterion

    def bad(outputs, targets, gen=None):
        terms = real(outputs, targets, gen)
        terms["frame_loss_dice"] = terms["frame_loss_dice"] * float("nan")
        return terms
    trainer.criterion = bad
    with pytest.raises(HVPLError, match=r"iteration 1: .*frame_loss_dice=nan"):
        trainer.run()


def test_input_errors(step0_model, tiny_split_dir, tmp_path):
    cfg = _cfg("hvpl")
    with pytest.raises(HVPLError, match="prev-model"):
        tr.train_step(cfg, step=1, train_json=tiny_split_dir / "train_step1.json", out_dir=tmp_path / "a")
    with pytest.raises(HVPLError, match="ogc-basis"):
        tr.train_step(cfg, step=1, train_json=tiny_split_dir / "train_step1.json", out_dir=tmp_path / "b",
                      prev_model=step0_model)
    with pytest.raises(HVPLError, match="train_step0.json"):   # the wrong step's data
        tr.train_step(_cfg("eclipse"), step=1, train_json=tiny_split_dir / "train_step0.json",
                      out_dir=tmp_path / "c", prev_model=step0_model)
    with pytest.raises(HVPLError, match="out of range"):
        tr.train_step(cfg, step=7, train_json=tiny_split_dir / "train_step0.json", out_dir=tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")


def _train_pair(cfg, step, train_json, tmp_path, crash_at, **kw):
    """Uninterrupted run vs a run crashed after ``crash_at`` and resumed; returns both final checkpoints."""
    full = tmp_path / "full" / f"step{step}"
    tr.train_step(cfg, step=step, train_json=train_json, out_dir=full, seed=3, **kw)
    part = tmp_path / "part" / f"step{step}"
    with pytest.raises(_Crash):
        tr.train_step(cfg, step=step, train_json=train_json, out_dir=part, seed=3,
                      after_iteration=_crash_after(crash_at), **kw)
    assert not (part / FINAL_NAME).exists()
    tr.train_step(cfg, step=step, train_json=train_json, out_dir=part, seed=3, **kw)
    return load_model_file(full / FINAL_NAME), load_model_file(part / FINAL_NAME), full, part


def _log_without_time(path: Path):
    return [{k: v for k, v in json.loads(x).items() if k not in ("time", "train_seconds")}
            for x in path.read_text().splitlines()]


def test_interrupted_and_resumed_step0_equals_uninterrupted(tiny_split_dir, tmp_path):
    # log every 3, checkpoint every 2: the resumed run must restore the partial log window of iterations 1-2
    cfg = _cfg("hvpl", "scenario.train.step0_iters=5", "scenario.train.step0_lr_drop=3", "scenario.train.log_period=3")
    a, b, full, part = _train_pair(cfg, 0, tiny_split_dir / "train_step0.json", tmp_path, crash_at=3)
    assert _states_equal(a["model"], b["model"])
    log_full = _log_without_time(full / LOG_NAME)
    assert [x.get("iter") for x in log_full] == [3, 5, None]
    assert log_full == _log_without_time(part / LOG_NAME)


def test_interrupted_and_resumed_ogc_step_equals_uninterrupted(step0_model, tiny_split_dir, tmp_path):
    cfg = _cfg("hvpl", "scenario.train.inc_iters=4")
    basis_path, _ = _basis(tmp_path, cfg)
    a, b, _, _ = _train_pair(cfg, 1, tiny_split_dir / "train_step1.json", tmp_path, crash_at=3,
                             prev_model=step0_model, ogc_basis=basis_path)
    assert _states_equal(a["model"], b["model"])


def test_a_step_restarted_with_other_input_files_does_not_resume_their_checkpoints(step0_model, tiny_split_dir,
                                                                                 tmp_path):
    """Same config and command, another OGC basis (equally another previous model or training JSON): the
    checkpoints of the first inputs are not resumed (they are removed), the result is that of the new inputs."""
    cfg = _cfg("hvpl", "scenario.train.inc_iters=4")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    basis_a, _ = _basis(tmp_path / "a", cfg, rank=5)
    basis_b, _ = _basis(tmp_path / "b", cfg, rank=3)
    kw = dict(step=1, train_json=tiny_split_dir / "train_step1.json", prev_model=step0_model, seed=3)
    ref = tmp_path / "ref" / "step1"
    tr.train_step(cfg, out_dir=ref, ogc_basis=basis_b, **kw)
    out = tmp_path / "run" / "step1"
    with pytest.raises(_Crash):
        tr.train_step(cfg, out_dir=out, ogc_basis=basis_a, after_iteration=_crash_after(3), **kw)
    assert tr.ckpt_mod.list_checkpoints(tr.default_ckpt_dir(out))
    tr.train_step(cfg, out_dir=out, ogc_basis=basis_b, **kw)
    assert _states_equal(load_model_file(ref / FINAL_NAME)["model"], load_model_file(out / FINAL_NAME)["model"])
    assert not tr.ckpt_mod.list_checkpoints(tr.default_ckpt_dir(out))


def test_data_workers_change_nothing_also_across_a_resume(step0_model, tiny_split_dir, tmp_path, monkeypatch):
    asked = []

    def recording(*args, workers, **kwargs):   # the trainer really reads with the workers it is given
        asked.append(workers)
        return iterate_batches(*args, workers=workers, **kwargs)
    iterate_batches = tr.iterate_batches
    monkeypatch.setattr(tr, "iterate_batches", recording)
    cfg = _cfg("hvpl", "scenario.train.inc_iters=4")
    basis_path, _ = _basis(tmp_path, cfg)
    kw = dict(prev_model=step0_model, ogc_basis=basis_path)
    train_json = tiny_split_dir / "train_step1.json"
    main = tmp_path / "main" / "step1"
    tr.train_step(cfg, step=1, train_json=train_json, out_dir=main, seed=3, workers=0, **kw)
    a, b, _, _ = _train_pair(cfg, 1, train_json, tmp_path / "workers", crash_at=3, workers=2, **kw)
    ref = load_model_file(main / FINAL_NAME)["model"]
    assert _states_equal(ref, a["model"]) and _states_equal(ref, b["model"])
    assert asked == [0, 2, 2, 2]   # reference, uninterrupted, crashed, resumed


def test_clip_seed_distinguishes_every_coordinate():
    seeds = {tr.clip_seed(s, t, i, k) for s in range(2) for t in range(2) for i in range(3) for k in range(3)}
    assert len(seeds) == 36


# ------------------------------------------------------------------------------------- 1 vs 2 processes
def _varied_instance_dataset(root: Path, num_videos=4, frames=2, size=48) -> Path:
    """Videos with one (even ids) or two (odd ids) instances visible in every frame, so the clips of a batch
    have different instance counts (each clip is normalised by its own count, whatever the process count)."""
    from hvpl.data.masks import encode_mask

    rng = np.random.default_rng(0)
    videos, anns = [], []
    for v in range(num_videos):
        names = []
        boxes = [(6 + 5 * v, 1)] + ([(30, 2)] if v % 2 else [])   # (x, category) per instance
        segs: list[list] = [[] for _ in boxes]
        for f in range(frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for k, (x, cat) in enumerate(boxes):
                mask = np.zeros((size, size), dtype=bool)
                y = 8 + 4 * f + 12 * k
                mask[y:y + 16, x:x + 14] = True
                img[mask] = (200, 30, 30) if cat == 1 else (30, 30, 200)
                segs[k].append(encode_mask(mask))
            name = f"v{v}/{f:05d}.jpg"
            (root / "frames" / f"v{v}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "frames" / name, quality=95)
            names.append(name)
        videos.append({"id": v + 1, "width": size, "height": size, "length": frames, "file_names": names})
        for k, (_, cat) in enumerate(boxes):
            anns.append({"id": len(anns) + 1, "video_id": v + 1, "category_id": cat, "iscrowd": 0,
                         "segmentations": segs[k], "areas": [float(16 * 14)] * frames,
                         "bboxes": [[0, 0, 1, 1]] * frames})
    data = {"videos": videos, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "image_root": "frames"}
    path = root / "train_step0.json"
    path.write_text(json.dumps(data))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _adam_step_bound(betas, iterations: int) -> float:
    """Largest |bias-corrected m / sqrt(v)| Adam can reach after ``iterations`` steps, whatever the gradients
    (Cauchy-Schwarz on m = (1-b1) sum b1^k g, v = (1-b2) sum b2^k g^2): the most one weight can move per step, in lr."""
    b1, b2 = betas
    series = sum((b1 * b1 / b2) ** k for k in range(iterations))
    return (1 - b1) / (1 - b2) ** 0.5 * series ** 0.5 * (1 - b2 ** iterations) ** 0.5 / (1 - b1 ** iterations)


def test_two_processes_equal_one_process(tmp_path):
    iterations, lr = 3, 3e-4
    train_json = _varied_instance_dataset(tmp_path / "data")
    args = ["train", "--scenario", "synth_smoke", "--step", "0", "--train-json", str(train_json), "--threads", "1",
            "--set", f"scenario.train.step0_iters={iterations}", "--set", f"scenario.train.lr={lr}"]
    for item in SMALL + ["scenario.train.log_period=1"]:
        args += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "hvpl.cli", *args, "--out-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "hvpl.cli", *args,
                          "--out-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    # iteration 1 runs identical weights on the same clips: the losses differ only by the order of the batch mean
    first_one = _log_without_time(tmp_path / "one" / LOG_NAME)[0]
    first_two = _log_without_time(tmp_path / "two" / LOG_NAME)[0]
    assert first_one["iter"] == 1 and first_one.keys() == first_two.keys()
    assert all(first_one[k] == pytest.approx(first_two[k], rel=1e-6) for k in first_one)
    a = load_model_file(tmp_path / "one" / FINAL_NAME)["model"]
    b = load_model_file(tmp_path / "two" / FINAL_NAME)["model"]
    cfg = _cfg("hvpl")
    tr.seed_everything(0)   # train_step's seed before it builds the model
    start = step_plan.build_step_model(cfg, step_plan.make_plan(cfg, 0, train_json, None), None).state_dict()
    # Adam divides each gradient by its own magnitude, so a weight whose gradient is zero up to rounding (e.g.
    # attention key biases, or any element crossing zero) moves by up to the Adam bound either way, depending on
    # the summation order (1 vs 2 processes, or the CPU kernels). Every weight must stay within twice that bound;
    # the others (well-conditioned: the gradient far above rounding) agree to a tenth of lr. A process that
    # trained on its half batch alone (no gradient averaging) moves a large share of the weights beyond that.
    bound = 2 * lr * sum(_adam_step_bound((0.9, 0.999), i) for i in range(1, iterations + 1))
    moved = total = far = 0
    for k in a:
        diff = (a[k].double() - b[k].double()).abs()
        assert diff.max() <= bound, k
        far += int((diff > lr / 10).sum())
        total += diff.numel()
        moved += int(not torch.equal(a[k], start[k]))
    assert moved > 0
    assert far <= 1e-3 * total, f"{far} of {total} weights differ by more than lr/10"


def test_killed_cli_process_resumes_to_identical_weights(tiny_split_dir, tmp_path):
    """A real `hvpl train` process is SIGKILLed after a checkpoint; the rerun resumes and ends bit-identical."""
    import time

    args = [sys.executable, "-m", "hvpl.cli", "train", "--scenario", "synth_smoke", "--step", "0", "--threads", "1",
            "--train-json", str(tiny_split_dir / "train_step0.json"), "--set", "scenario.train.step0_iters=10"]
    for item in SMALL:
        args += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = subprocess.run(args + ["--out-dir", str(tmp_path / "ref" / "step0")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run" / "step0"
    proc = subprocess.Popen(args + ["--out-dir", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tr.default_ckpt_dir(out) / "ckpt_00000004.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    assert ckpt.exists() and not (out / FINAL_NAME).exists()   # killed mid-step, after a checkpoint
    again = subprocess.run(args + ["--out-dir", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    assert _states_equal(load_model_file(out / FINAL_NAME)["model"],
                         load_model_file(tmp_path / "ref" / "step0" / FINAL_NAME)["model"])


def test_a_step0_schedule_without_its_drop_is_reported(capsys):
    from types import SimpleNamespace

    cfg = _cfg("hvpl", "scenario.train.step0_iters=20", "scenario.train.step0_lr_drop=25")
    tr._warn_if_no_lr_drop(cfg, SimpleNamespace(lr_drop=True, iters=20))
    assert "step0_lr_drop = 25 >= 20 iterations: the LR is not dropped" in capsys.readouterr().err
    tr._warn_if_no_lr_drop(cfg, SimpleNamespace(lr_drop=False, iters=20))     # incremental: constant LR anyway
    tr._warn_if_no_lr_drop(cfg, SimpleNamespace(lr_drop=True, iters=30))
    assert capsys.readouterr().err == ""


def _never(i):
    raise AssertionError(f"iteration {i} trained: the finished step should have been restored")


def test_a_finished_step_whose_outputs_were_thrown_away_is_restored_not_retrained(tiny_split_dir, tmp_path,
                                                                                    monkeypatch):
    """Issue 19 4.1: Snakemake deletes the outputs of a job that finished after Ctrl-C (it counts as incomplete)
    and reruns it. The rerun restores the outputs from the finished record (same bytes, nothing trained); another
    configuration, other inputs or other code train afresh."""
    cfg = _cfg("hvpl", "scenario.train.step0_iters=2", "scenario.train.checkpoint_period=1")
    kw = dict(step=0, train_json=tiny_split_dir / "train_step0.json", seed=0)
    out = tmp_path / "step0"
    tr.train_step(cfg, out_dir=out, **kw)
    first = {name: (out / name).read_bytes() for name in (FINAL_NAME, LOG_NAME)}
    for name in first:                   # what Snakemake does before rerunning an incomplete job
        (out / name).unlink()
    tr.train_step(cfg, out_dir=out, after_iteration=_never, **kw)
    assert {name: (out / name).read_bytes() for name in first} == first
    (out / FINAL_NAME).unlink()
    tr.train_step(cfg, out_dir=out, after_iteration=_never, **kw)       # again: the record is kept
    assert (out / FINAL_NAME).read_bytes() == first[FINAL_NAME]

    trained = []
    tr.train_step(cfg, out_dir=out, after_iteration=trained.append, **{**kw, "seed": 1})   # another run: trains
    assert trained == [1, 2]
    monkeypatch.setattr(tr.ckpt_mod, "code_digest", lambda: "other code")
    trained.clear()
    tr.train_step(cfg, out_dir=out, after_iteration=trained.append, **{**kw, "seed": 1})   # other code: trains
    assert trained == [1, 2]
