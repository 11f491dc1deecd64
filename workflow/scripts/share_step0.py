"""Give a method its base variant's shared step 0: the model with this method's name, and the train log.

Run by the `share_step0` rule (Snakemake `script:`); `snakemake.input`: model, train_log; `snakemake.output`:
model, train_log; `snakemake.wildcards.method`. Both outputs are written atomically. The base run's TensorBoard
event files (step 0's training curves, not declared outputs) are copied into the method's run, so that its
TensorBoard run holds every step.
"""
import shutil
import sys
from pathlib import Path

from hvpl.utils.io import atomic_path, atomic_torch_save
from hvpl.utils.safe_load import load_torch_file


def share(model_in: str, log_in: str, model_out: str, log_out: str, method: str) -> None:
    """Copy the base step 0, recording ``method`` in the checkpoint (predict reads the method from it)."""
    ckpt = load_torch_file(model_in, "model file")   # tensors and plain data only
    ckpt["method"] = method
    atomic_torch_save(model_out, ckpt)
    with atomic_path(log_out) as tmp:
        shutil.copyfile(log_in, tmp)
    copy_tensorboard(Path(model_in).parent.parent / TB_DIR, Path(model_out).parent.parent / TB_DIR)


TB_DIR = "tensorboard"   # a run's TensorBoard folder (workflow/rules/common.smk tensorboard_flag)


def copy_tensorboard(base: Path, run: Path) -> None:
    """The base run's event files into the run's TensorBoard folder (none when the base has none)."""
    for event in sorted(base.glob("events.out.tfevents.*")) if base.is_dir() else []:
        run.mkdir(parents=True, exist_ok=True)
        with atomic_path(run / event.name) as tmp:
            shutil.copyfile(event, tmp)


if __name__ == "__main__" and "snakemake" in globals():
    sm = snakemake  # noqa: F821 -- injected by Snakemake's script directive
    with open(sm.log[0], "w") as log:
        sys.stderr = log
        share(sm.input.model, sm.input.train_log, sm.output.model, sm.output.train_log, sm.wildcards.method)
        print(f"step 0 of {sm.wildcards.method} <- {sm.input.model}", file=log)
