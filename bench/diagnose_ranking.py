"""Why do prompt methods lose old classes at the final step? Re-predict trained models under variants.

For each method's final-step model of one run: the configured prediction (10 detections per video, logit
manipulation), 100 detections per video, and no logit manipulation; prints AP / AP_old / AP_new per variant
and the mean sum of sigmoid(foreign-class logits) on each query group's 3 most confident own-class queries
(the quantity logit manipulation thresholds). Table on stdout, JSON in bench/out/diagnose_ranking.json.

    python bench/diagnose_ranking.py --results results --scenario synth_4-2 --seed 0 --methods hvpl eclipse finetune
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from hvpl.data.clip_dataset import VideoDataset
from hvpl.engine.model_file import FINAL_NAME, load_model_file, rebuild_model
from hvpl.evaluation.evaluate import evaluate_files
from hvpl.model.inference import predict_video
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "diagnose_ranking.json"


def final_step(run_dir: Path) -> int:
    return max(int(p.name[4:]) for p in run_dir.glob("step*") if (p / FINAL_NAME).is_file())


def foreign_sigmoid_sum(model, ckpt, dataset, videos: int) -> dict:
    """Per group: mean over videos of sum_c sigmoid(z_c), c outside the group's task, on its top-3 queries."""
    bounds = [0]
    for n in ckpt["classes_per_task"]:
        bounds.append(bounds[-1] + n)
    sums: dict[int, list[float]] = {}
    for i in range(min(videos, len(dataset))):
        for out in model.forward_video(dataset[i]["images"].float()):
            k, logits = out["task"], out["pred_logits"]
            if not model.method.frame_prompts and k > 0:
                continue
            own = torch.zeros(logits.shape[1] - 1, dtype=torch.bool)
            own[bounds[k]:bounds[k + 1]] = True
            probs = logits.softmax(-1)[:, :-1]
            top = probs[:, own].max(1).values.topk(min(3, logits.shape[0])).indices
            sums.setdefault(k, []).append(torch.sigmoid(logits[top, :-1][:, ~own]).sum(1).mean().item())
    return {k: round(sum(v) / len(v), 3) for k, v in sums.items() if v}


def evaluate_variant(model, ckpt, dataset, test_json, classes, step, deltas, topk, tmp: Path) -> dict:
    results = []
    with torch.no_grad():
        for i in range(len(dataset)):
            results += predict_video(model, dataset[i], deltas, topk, class_order=ckpt["class_order"])
    atomic_write_json(tmp / "pred.json", results)
    m = evaluate_files(test_json, tmp / "pred.json", tmp / "metrics.json", classes_path=classes, step=step)
    return {"AP": m["stats"]["AP"], "AP_old": m["AP_old"], "AP_new": m["AP_new"],
            "per_class_AP": {c: v["AP"] for c, v in m["per_class"].items()}}


def diagnose(results: Path, scenario: str, seed: int, method: str) -> dict:
    run = results / scenario / method / f"seed{seed}"
    step = final_step(run)
    ckpt = load_model_file(run / f"step{step}" / FINAL_NAME)
    model = rebuild_model(ckpt).eval()
    split = results / "data" / scenario
    test_json, classes = split / f"test_step{step}.json", split / "classes.json"
    dataset = VideoDataset(test_json, ckpt["scenario"]["input"])
    deltas = list(ckpt["scenario"]["logit_deltas"]) if model.method.logit_manipulation else None
    topk = int(ckpt["scenario"]["detections_per_video"])
    variants = {f"top{topk}": (deltas, topk), "top100": (deltas, 100), f"top{topk}_no_manipulation": (None, topk)}
    row = {"method": method, "step": step, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, (d, k) in variants.items():
            row["variants"][name] = evaluate_variant(model, ckpt, dataset, test_json, classes, step, d, k, Path(tmp))
        row["foreign_sigmoid_sum"] = foreign_sigmoid_sum(model, ckpt, dataset, videos=60)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--scenario", default="synth_4-2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["hvpl", "eclipse", "finetune"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [diagnose(args.results, args.scenario, args.seed, m) for m in args.methods]
    print(f"{'method':<10} {'variant':<24} {'AP':>6} {'AP_old':>7} {'AP_new':>7}")
    for row in rows:
        for name, v in row["variants"].items():
            print(f"{row['method']:<10} {name:<24} {100 * v['AP']:6.1f} {100 * v['AP_old']:7.1f} {100 * v['AP_new']:7.1f}")
        print(f"{row['method']:<10} sum sigmoid(foreign) per group: {row['foreign_sigmoid_sum']}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT, {"scenario": args.scenario, "seed": args.seed, "rows": rows})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
