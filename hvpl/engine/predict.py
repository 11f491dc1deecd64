"""``predict()``: a trained step's ``model_final.pth`` over a test JSON -> YouTube-VIS results (predictions.json).

The model file is read and its model rebuilt by hvpl.engine.model_file.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import torch

from hvpl.engine.authors_checkpoint import load_model_or_authors
from hvpl.engine.model_file import rebuild_model
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_json
from hvpl.utils.logging import log, progress


def predict(model_path, test_json, out, *, device: str = "cpu", threads: int | None = None,
            workers: int | None = None, max_videos: int | None = None, image_root=None, run_cfg: dict | None = None,
            classes_json=None, authors_compat: bool | None = None) -> list[dict]:
    """Run the model of ``model_path`` over every video of ``test_json`` (at most ``max_videos``) and write
    ``out`` (a JSON list of ``{video_id, category_id, score, segmentations}``) atomically. Returns the list.
    Frames are read from ``image_root``, else the JSON's ``image_root`` entry (the split writes one; an official
    valid/test file has none). ``workers``: processes reading videos ahead (None: hvpl.engine.loader's default
    for the device). ``model_path`` may also be an authors' HVPL checkpoint: it is converted for the run config
    ``run_cfg`` (scenario, model sizes), its class order read from ``classes_json`` (hvpl.engine.authors_checkpoint).
    ``authors_compat``: True/False overrides the model file's ``inference.authors_compat``
    (hvpl.model.authors_compat), None keeps it."""
    from hvpl.data.clip_dataset import VideoDataset
    from hvpl.engine.distributed import resolve_device
    from hvpl.engine.loader import default_workers, iterate_items
    from hvpl.model.inference import predict_video

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)   # the pin-memory thread of the data workers uses the current device
    ckpt = load_model_or_authors(model_path, run_cfg, classes_json=classes_json)
    scenario = ckpt["scenario"]
    model = rebuild_model(ckpt).to(dev).eval()
    if authors_compat is not None:
        model.authors_compat = bool(authors_compat)
    if getattr(model, "authors_compat", False):
        log("inference.authors_compat: the authors' test-time video path (frame-0 slicing, per-frame tree scan)")
    dataset = VideoDataset(Path(test_json), scenario["input"], image_root=image_root)
    check_model_classes(ckpt, dataset.data, test_json)
    count = len(dataset) if max_videos is None else min(len(dataset), max(0, int(max_videos)))
    # the delta list is truncated/padded to the model's groups inside predict_video (classifier.deltas_for_groups)
    deltas = list(scenario["logit_deltas"]) if model.method.logit_manipulation else None
    topk = int(scenario["detections_per_video"])
    results: list[dict] = []
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    workers = default_workers(dev, threads) if workers is None else int(workers)
    videos = iterate_items(dataset, count, workers=workers, pin_memory=dev.type == "cuda")
    with torch.no_grad(), autocast, closing(videos):
        for item in progress(videos, total=count, desc="predict"):
            item = dict(item, images=item["images"].to(dev, non_blocking=True))
            results.extend(predict_video(model, item, deltas, topk, class_order=ckpt["class_order"]))
    atomic_write_json(out, results, indent=None)
    log(f"{out}: {len(results)} detections on {count} videos")
    return results


def check_model_classes(ckpt: dict, data: dict, test_json) -> None:
    """The classes the model has learnt (the first sum(classes_per_task) of its class order) must all be
    categories of the test JSON: its predictions carry those category ids, and the evaluator rejects ids the
    ground truth lacks. Categories the model has not learnt yet only get a warning (an official valid/test
    file lists every class)."""
    learnt = list(ckpt["class_order"])[:sum(int(n) for n in ckpt["classes_per_task"])]
    categories = {c["id"] for c in data["categories"]}
    missing = [c for c in learnt if c not in categories]
    where = ckpt.get("_path", "the model")
    if missing:
        raise HVPLError(f"{test_json}: categories lack classes {missing} that the step-{ckpt['step']} model {where} "
                        f"predicts; predict with the test JSON of the model's step (test_step{ckpt['step']}.json)")
    unseen = sorted(categories - set(learnt), key=str)
    if unseen:
        log(f"warning: {test_json}: categories {unseen} are not among the {len(learnt)} classes the step-"
            f"{ckpt['step']} model {where} has learnt; their AP will be 0")
