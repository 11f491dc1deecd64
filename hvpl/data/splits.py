"""Class-incremental scenario splits (protocol.md Sections 1-2) -> the split folder of DESIGN.md.

``make_scenario_split`` writes into ``out_dir``:

- ``classes.json``: class order, the category ids of each step, categories, whether we re-split;
- ``split_info.json``: where the train/test videos came from (paper split files or our seeded re-split);
- ``train_step{t}.json``: train videos with annotations of step-t classes only (others dropped);
- ``test_step{t}.json``: test videos with >= 1 instance of a seen class, GT and categories = seen classes;
- ``train_all.json``: every class (the joint method's training set);
- with ``data.use_coco``: ``coco_step{t}.json`` / ``coco_all.json`` (:func:`coco_file_names`), COCO
  single-image pseudo-videos of the same classes; every file is written, with no video when none of the step's
  classes has a COCO instance (the workflow declares them all as outputs).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hvpl.data.ytvis import check_video_frames, filter_classes, load_ytvis, resolve_layout, video_classes
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json, staged_dir, write_json
from hvpl.utils.logging import log, progress


def class_order(scenario: dict, categories: list[dict], where: str) -> list[int]:
    """Category ids in class order: ``scenario["class_order"]`` if given, else ascending id."""
    ids = sorted(c["id"] for c in categories)
    order = scenario.get("class_order") or ids
    if sorted(order) != ids:
        raise HVPLError(f"scenario '{scenario['name']}': class_order {order} is not a permutation of the "
                        f"category ids {ids} of {where}")
    if len(order) != scenario["num_classes"]:
        raise HVPLError(f"scenario '{scenario['name']}': num_classes {scenario['num_classes']} but {where} has "
                        f"{len(order)} categories")
    return list(order)


def permuted_order(order: list[int], order_index: int) -> list[int]:
    """Class order ``order_index`` of a scenario: 0 = ``order`` itself, k >= 1 = a permutation of all of it
    (base classes drawn like the rest) by a generator seeded with k, so the same k always gives the same order."""
    if order_index < 0:
        raise HVPLError(f"class order index must be >= 0, got {order_index}")
    if order_index == 0:
        return list(order)
    perm = np.random.default_rng(order_index).permutation(len(order))
    return [order[i] for i in perm]


def step_classes(order: list[int], base: int, increment: int) -> list[list[int]]:
    """Category ids introduced at each step: the first ``base``, then ``increment`` at a time."""
    steps = [order[:base]]
    for start in range(base, len(order), increment):
        steps.append(order[start:start + increment])
    return steps


def _pick_seed_videos(order, vid_classes, perm, counts, test, test_count, where):
    """Phase 1: every class gets one test video (rarest class first) while keeping >= 1 train video."""
    for c in sorted(order, key=lambda c: (counts[c], order.index(c))):
        if test_count[c] > 0:
            continue
        for v in perm:
            cls = vid_classes[v]
            if c in cls and v not in test and all(counts[k] - test_count[k] > 1 for k in cls):
                test.add(v)
                for k in cls:
                    test_count[k] += 1
                break
        else:
            raise HVPLError(f"{where}: class {c} has {counts[c]} video(s); the re-split needs >= 2 "
                            f"(one train, one test) that do not starve another class")


def stratified_resplit(data: dict, order: list[int], test_ratio: float, seed: int, where: str):
    """Seeded, class-stratified train/test split of ``data``'s videos -> (train_ids, test_ids), sorted.

    Every class gets >= 1 test and >= 1 train video; per class at most ceil(ratio * count) test videos;
    about ``round(ratio * #annotated videos)`` test videos in total, all annotated.
    """
    if not 0.0 < test_ratio < 1.0:
        raise HVPLError(f"{where}: split.test_ratio must be in (0, 1), got {test_ratio}")
    vid_classes = video_classes(data)
    ids = sorted(vid_classes)
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    counts = {c: 0 for c in order}
    for cls in vid_classes.values():
        for c in cls:
            counts[c] += 1
    test, test_count = set(), {c: 0 for c in order}
    _pick_seed_videos(order, vid_classes, perm, counts, test, test_count, where)
    # videos without an annotation belong to no step's test set: they stay in training and do not count
    target = round(test_ratio * sum(1 for v in ids if vid_classes[v]))
    caps = {c: math.ceil(test_ratio * counts[c]) for c in order}
    for v in perm:
        if len(test) >= target:
            break
        cls = vid_classes[v]
        if not cls or v in test or any(test_count[k] >= caps[k] or counts[k] - test_count[k] <= 1 for k in cls):
            continue
        test.add(v)
        for k in cls:
            test_count[k] += 1
    return sorted(set(ids) - test), sorted(test)


def _merge_split_files(train_path: Path, test_path: Path) -> tuple[dict, list[int], list[int]]:
    """Paper split files -> one dict holding both splits + the two video id lists."""
    train = load_ytvis(train_path)
    test = load_ytvis(test_path)
    clash = {v["id"] for v in train["videos"]} & {v["id"] for v in test["videos"]}
    if clash:
        raise HVPLError(f"{test_path}: video id {min(clash)} is also in {train_path}")
    if {c["id"] for c in train["categories"]} != {c["id"] for c in test["categories"]}:
        raise HVPLError(f"{test_path}: categories differ from those of {train_path}")
    merged = dict(train, videos=train["videos"] + test["videos"],
                  annotations=train["annotations"] + test["annotations"])
    ann_ids = [a["id"] for a in merged["annotations"]]
    if len(set(ann_ids)) != len(ann_ids):
        # The two files number annotations independently; renumber so ids stay unique.
        merged["annotations"] = [dict(a, id=i + 1) for i, a in enumerate(merged["annotations"])]
    return merged, sorted(v["id"] for v in train["videos"]), sorted(v["id"] for v in test["videos"])


def _categories_in_order(data: dict, ids: list[int]) -> list[dict]:
    by_id = {c["id"]: c for c in data["categories"]}
    return [by_id[i] for i in ids]


def _rel_image_root(frames: Path, out_dir: Path) -> str:
    try:
        return os.path.relpath(frames.resolve(), out_dir.resolve())
    except ValueError:  # different drives (Windows): fall back to an absolute path
        return str(frames.resolve())


def _step_files(data, order, steps, train_ids, test_ids, out_dir: Path, image_root: str) -> dict[str, dict]:
    """File name -> YouTube-VIS dict of every per-step file (built fully before anything is written)."""
    files = {}
    for t, new in enumerate(steps):
        seen = [c for s in steps[:t + 1] for c in s]
        for name, ids, vids in ((f"train_step{t}.json", new, train_ids), (f"test_step{t}.json", seen, test_ids)):
            files[name] = filter_classes(data, ids, categories=_categories_in_order(data, ids), drop_empty=True,
                                         video_ids=vids, where=str(out_dir / name))
    files["train_all.json"] = filter_classes(data, order, categories=_categories_in_order(data, order),
                                             drop_empty=True, video_ids=train_ids,
                                             where=str(out_dir / "train_all.json"))
    return {name: dict(obj, image_root=image_root) for name, obj in files.items()}


def coco_file_name(step: int, joint: bool = False) -> str:
    """The COCO pseudo-video file of step ``step`` (``joint``: of the joint method's single step)."""
    return "coco_all.json" if joint else f"coco_step{step}.json"


def coco_file_names(num_steps: int) -> list[str]:
    """The COCO pseudo-video files the split writes with ``data.use_coco``: one per step, then the joint one."""
    return [coco_file_name(t) for t in range(num_steps)] + [coco_file_name(0, joint=True)]


def coco_annotation_path(dataset_root: Path) -> Path:
    """COCO's ``instances_train2017.json``, looked up next to the dataset folder, in it, or under
    $DATASETS_ROOT (the first holding ``coco/annotations``); HVPLError naming the path when absent."""
    from hvpl.data.coco import coco_layout

    bases = [dataset_root.parent, dataset_root] + ([Path(os.environ["DATASETS_ROOT"])]
                                                   if os.environ.get("DATASETS_ROOT") else [])
    base = next((b for b in bases if (b / "coco" / "annotations").is_dir()), bases[0])
    return coco_layout(base)[0]


def _coco_files(scenario: dict, layout, order, steps, out_dir: Path) -> dict[str, dict]:
    """``coco_step{t}.json`` / ``coco_all.json`` (COCO pseudo-videos of the step's classes) when
    ``data.use_coco`` is set; a step none of whose classes has a COCO instance gets a file without videos."""
    from hvpl.data.coco import coco_layout, convert_coco

    if not (scenario.get("data") or {}).get("use_coco"):
        return {}
    ann_path = coco_annotation_path(layout.root)
    images = coco_layout(ann_path.parent.parent)[1]
    coco = read_json(ann_path)
    root = _rel_image_root(images, out_dir)
    names = coco_file_names(len(steps))
    return {name: dict(convert_coco(coco, scenario["dataset"], where=str(ann_path), keep_classes=keep,
                                    allow_empty=True), image_root=root)
            for name, keep in zip(names, [*steps, order])}


def _per_class_counts(data: dict, ids: list[int], order: list[int]) -> dict[str, int]:
    vid_classes = video_classes(data)
    return {str(c): sum(c in vid_classes[v] for v in ids) for c in order}


def check_dataset_categories(data: dict, dataset: str, source: str) -> None:
    """A real dataset's categories against its list in categories.json (the COCO maps and the class order rely on
    it): ids among the listed ones (e.g. not 0-based), else HVPLError; names (case, '_' vs ' ' ignored) differing
    for half the classes or more mean another dataset (HVPLError), a few differing names only a warning.
    Datasets not listed there pass."""
    from hvpl.data.coco import category_table

    if dataset not in category_table():
        return
    expected = {c["id"]: c["name"] for c in category_table()[dataset]["categories"]}
    found = {c["id"]: c["name"] for c in data["categories"]}
    extra = sorted(set(found) - set(expected))
    if extra:
        raise HVPLError(f"{source}: categories: ids {extra[:5]} are not {dataset}'s in categories.json (ids "
                        f"{min(expected)}..{max(expected)}); is this the {dataset} annotation file?")

    def norm(name: str) -> str:
        return str(name).lower().replace("_", " ").strip()

    differ = [i for i in sorted(found) if norm(found[i]) != norm(expected[i])]
    examples = ", ".join(f"{i}: '{found[i]}' vs '{expected[i]}'" for i in differ[:3])
    if 2 * len(differ) >= len(found):
        raise HVPLError(f"{source}: categories: {len(differ)} of {len(found)} names differ from {dataset}'s in "
                        f"categories.json ({examples}); is this the {dataset} annotation file?")
    if differ:
        log(f"warning: {source}: {len(differ)} category names differ from categories.json ({examples})")


def _check_split_frames(data: dict, frames: Path, train_ids, test_ids, source: list[str]) -> None:
    """Every frame of the split's videos exists and has its video's size, before any file is written (so a bad
    frame stops the split, not a training step hours later). Errors name the annotation file the video is in."""
    where = {**{vid: source[0] for vid in train_ids}, **{vid: source[-1] for vid in test_ids}}
    videos = [v for v in data["videos"] if v["id"] in where]
    n = sum(len(v["file_names"]) for v in videos)
    log(f"checking the {n} frames of {len(videos)} videos under {frames} (existence and size)")
    for v in progress(videos, total=len(videos), desc="split: frame check"):
        check_video_frames(v, frames, where[v["id"]], sizes=True)


def make_scenario_split(scenario: dict, data_root: Path, out_dir: Path, seed: int | None,
                        order_index: int = 0) -> dict:
    """Split ``scenario``'s dataset under ``data_root`` into the per-step files in ``out_dir``.

    Uses the paper's split files when present, else a seeded class-stratified re-split of train.json
    (``seed``, default ``scenario["split"]["seed"]``). ``order_index`` k >= 1 trains the classes in the order
    :func:`permuted_order` draws from k; the train/test videos stay those of the scenario's own order, so that
    orders differ in the class order only. Returns the classes.json dict (recording ``order``).
    """
    layout = resolve_layout(scenario["dataset"], data_root)
    split_cfg = scenario.get("split") or {}
    seed = split_cfg.get("seed", 0) if seed is None else seed
    out_dir = Path(out_dir)
    if layout.split_files is not None:
        data, train_ids, test_ids = _merge_split_files(*layout.split_files)
        source = [str(p) for p in layout.split_files]
        resplit = False
        log(f"{scenario['name']}: using the paper's split files {source[0]}, {source[1]}")
    else:
        data = load_ytvis(layout.train_json)
        source = [str(layout.train_json)]
        resplit = True
    check_dataset_categories(data, scenario["dataset"], source[0])
    order = class_order(scenario, data["categories"], source[0])
    if resplit:
        train_ids, test_ids = stratified_resplit(data, order, split_cfg.get("test_ratio", 0.2), seed,
                                                 str(layout.train_json))
        log(f"{scenario['name']}: no paper split files; re-split {layout.train_json} with seed {seed} "
            f"into {len(train_ids)} train / {len(test_ids)} test videos")
    _check_split_frames(data, layout.train_frames, train_ids, test_ids, source)
    order = permuted_order(order, order_index)
    steps = step_classes(order, scenario["base"], scenario["increment"])
    files = _step_files(data, order, steps, train_ids, test_ids, out_dir,
                        _rel_image_root(layout.train_frames, out_dir))
    files.update(_coco_files(scenario, layout, order, steps, out_dir))
    info = {"scenario": scenario["name"], "dataset": scenario["dataset"], "source": source, "resplit": resplit,
            "split_seed": seed if resplit else None, "test_ratio": split_cfg.get("test_ratio") if resplit else None,
            "frames": str(layout.train_frames), "num_train_videos": len(train_ids),
            "num_test_videos": len(test_ids), "train_videos_per_class": _per_class_counts(data, train_ids, order),
            "test_videos_per_class": _per_class_counts(data, test_ids, order),
            "train_video_ids": train_ids, "test_video_ids": test_ids}
    classes = {"scenario": scenario["name"], "dataset": scenario["dataset"], "order": order_index,
               "class_order": order,
               "steps": steps, "categories": [{"id": c["id"], "name": c["name"]}
                                              for c in _categories_in_order(data, order)],
               "resplit": resplit, "split_seed": seed if resplit else None}
    with staged_dir(out_dir) as stage:   # every file or none: written aside, then moved into out_dir
        for name, obj in files.items():
            write_json(stage / name, obj, indent=None)
        write_json(stage / "split_info.json", info)
        write_json(stage / "classes.json", classes)
    return classes
