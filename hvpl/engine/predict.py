"""``predict()``: a trained step's ``model_final.pth`` over a test JSON -> YouTube-VIS results (predictions.json).

Also the shared helpers that read a ``model_final.pth`` and rebuild its model (used by the trainer for step
t-1 and by OGC's memory collection).
"""
from __future__ import annotations

import copy
from contextlib import closing
from pathlib import Path

import torch

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_json
from hvpl.utils.logging import log, progress

REQUIRED_KEYS = ("model", "model_config", "scenario", "method", "step", "classes_per_task", "class_order")


def load_model_file(path: str | Path) -> dict:
    """Read a ``model_final.pth`` dict (DESIGN.md) to CPU; a missing/foreign file raises HVPLError naming it."""
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise HVPLError(f"{path}: not a readable model file ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise HVPLError(f"{path}: expected a model_final.pth dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise HVPLError(f"{path}: missing entries {missing} (not a model_final.pth of hvpl train)")
    ckpt["_path"] = str(path)
    return ckpt


def rebuild_model(ckpt: dict, method=None):
    """The HVPLModel of a loaded ``model_final.pth``, weights loaded (strict), on CPU.

    ``method`` (name or Method) overrides the recorded one: a shared step-0 model of one method continues as
    another method with the same base variant. Backbone weight files are not re-read (the state dict holds them).
    """
    from hvpl.continual.methods import get_method
    from hvpl.model.hvpl import HVPLModel

    where = ckpt.get("_path", "checkpoint")
    recorded = get_method(ckpt["method"])
    method = recorded if method is None else get_method(getattr(method, "name", method))
    if method.name != recorded.name and (int(ckpt["step"]) > 0 or method.base_variant != recorded.base_variant):
        raise HVPLError(f"{where}: a step-{ckpt['step']} '{recorded.name}' model cannot continue as "
                        f"'{method.name}' (only a step-0 model of the same base variant, "
                        f"'{recorded.base_variant}', is shared between methods)")
    model_cfg = copy.deepcopy(ckpt["model_config"])
    model_cfg.setdefault("backbone", {})["weights"] = None
    prompts = ckpt["scenario"].get("prompts_per_task")
    if prompts is None:
        raise HVPLError(f"{where}: missing entry 'scenario.prompts_per_task'")
    model = HVPLModel(model_cfg, method, prompts, list(ckpt["classes_per_task"]))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise HVPLError(f"{where}: weights do not match a '{method.name}' model with classes per task "
                        f"{ckpt['classes_per_task']}: {exc}") from exc
    model.set_step_mode(len(ckpt["classes_per_task"]) - 1 if method.prompt_based else 0)
    return model


def predict(model_path, test_json, out, *, device: str = "cpu", threads: int | None = None,
            workers: int | None = None, max_videos: int | None = None, image_root=None) -> list[dict]:
    """Run the model of ``model_path`` over every video of ``test_json`` (at most ``max_videos``) and write
    ``out`` (a JSON list of ``{video_id, category_id, score, segmentations}``) atomically. Returns the list.
    Frames are read from ``image_root``, else the JSON's ``image_root`` entry (the split writes one; an official
    valid/test file has none). ``workers``: processes reading videos ahead (None: hvpl.engine.loader's default
    for the device)."""
    from hvpl.data.clip_dataset import VideoDataset
    from hvpl.engine.distributed import resolve_device
    from hvpl.engine.loader import default_workers, iterate_items
    from hvpl.model.inference import predict_video

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)   # the pin-memory thread of the data workers uses the current device
    ckpt = load_model_file(model_path)
    scenario = ckpt["scenario"]
    model = rebuild_model(ckpt).to(dev).eval()
    dataset = VideoDataset(Path(test_json), scenario["input"], image_root=image_root)
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
