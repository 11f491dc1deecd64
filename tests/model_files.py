"""Test helper: untrained step models saved in the model_final.pth format (no training needed)."""
from __future__ import annotations

from hvpl.engine import step_plan
from hvpl.engine import trainer as tr
from hvpl.engine.model_file import load_model_file, model_file_dict
from hvpl.utils.io import atomic_torch_save


def save_untrained(cfg, step, train_json, prev, path):
    """Build step ``step``'s model (grown from ``prev``), save it like ``hvpl train`` would, load it back."""
    plan, _ = step_plan.plan_step(cfg, step, train_json, prev, seed=0)
    tr.seed_everything(step)
    model = step_plan.build_step_model(cfg, plan, prev)
    atomic_torch_save(path, {**model_file_dict(cfg, plan, model), "trainable_params": 0, "total_params": 0,
                             "train_seconds": 0.0, "iterations": 0})
    return load_model_file(path)


def save_first_steps(cfg, split_dir, root):
    """Untrained step-0 and step-1 models of ``cfg`` on the split ``split_dir``, saved under ``root``: their paths."""
    step0 = save_untrained(cfg, 0, split_dir / "train_step0.json", None, root / "step0.pth")
    save_untrained(cfg, 1, split_dir / "train_step1.json", step0, root / "step1.pth")
    return root / "step0.pth", root / "step1.pth"
