"""Training parity, authors' side: the trainable set and the optimizer's parameter groups at steps 0, 1, 2.

Builds the authors' HVPL at CONT.TASK 0/1/2 of scripts/ytb2019_20_2.sh with the reference harness
(``../shared/parity/authors_env.py``: their model on CPU, ``freeze_for_prompt_tuning`` at TASK > 0) and runs their
own ``Trainer.build_optimizer`` (train_net_hvpl.py:366-488), taken out of the file with ``ast`` and executed alone
(importing train_net_hvpl.py would pull in their data pipeline). Writes, per step, every parameter with its
trainable flag, and for trainable ones the learning-rate multiplier (group lr / BASE_LR) and weight decay:

    PARITY_WORK=/tmp/parity_work_t /tmp/parity_venv_t/bin/python tools/parity/train_parity_groups_authors.py \
        --out /tmp/groups_authors.json
"""
from __future__ import annotations

import argparse
import ast
import copy
import itertools
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Set

HARNESS = Path(os.environ.get("PARITY_HARNESS", Path(__file__).resolve().parents[2] / ".." / "shared" / "parity"))
sys.path.insert(0, str(HARNESS))

import torch  # noqa: E402
from authors_env import AUTHORS, build_authors_model  # noqa: E402  (sets sys.path to their code, stubs)


def their_build_optimizer():
    """Trainer.build_optimizer from train_net_hvpl.py, compiled on its own (same globals it uses)."""
    src = (AUTHORS / "train_net_hvpl.py").read_text()
    tree = ast.parse(src)
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    fn = next(n for n in trainer.body if isinstance(n, ast.FunctionDef) and n.name == "build_optimizer")
    code = textwrap.dedent(ast.get_source_segment(src, fn))
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("@"))
    import detectron2.utils.comm as comm
    from detectron2.solver.build import maybe_add_gradient_clipping
    scope = {"copy": copy, "itertools": itertools, "logging": logging, "torch": torch, "comm": comm,
             "maybe_add_gradient_clipping": maybe_add_gradient_clipping, "List": List, "Dict": Dict, "Any": Any,
             "Set": Set}
    exec(compile(code, str(AUTHORS / "train_net_hvpl.py"), "exec"), scope)
    return scope["build_optimizer"]


def groups(task: int) -> dict:
    cfg, model = build_authors_model(task)
    build = their_build_optimizer()
    logging.disable(logging.CRITICAL)
    opt = build(None, cfg, model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {n: {"trainable": bool(p.requires_grad)} for n, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            out[by_id[id(p)]].update(lr_mult=g["lr"] / cfg.SOLVER.BASE_LR, weight_decay=g["weight_decay"])
    clip = {"enabled": cfg.SOLVER.CLIP_GRADIENTS.ENABLED, "type": cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE,
            "value": cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE}
    return {"base_lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY, "optimizer": type(opt).__name__,
            "clip": clip, "params": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    res = {str(t): groups(t) for t in args.tasks}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for t, r in res.items():
        tr = {n: v for n, v in r["params"].items() if v["trainable"]}
        combos = sorted({(v["lr_mult"], v["weight_decay"]) for v in tr.values()})
        print(f"task {t}: {len(tr)} trainable of {len(r['params'])}; (lr_mult, wd) groups {combos}; {r['optimizer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
