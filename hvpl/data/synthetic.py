"""The embedded synthetic benchmark (protocol.md Section 3), written in the YouTube-VIS layout.

``generate_synthetic(out_dir, ...)`` writes ``out_dir/train/JPEGImages/<video>/<frame>.jpg`` and, last,
``out_dir/train.json`` (compressed RLE masks of the visible part of every instance, null where absent).

Each class is a (shape, colour, temporal behaviour) triple from :data:`CLASS_SPECS`. Classes share shapes and
colours, and some differ ONLY in behaviour (``pulse``: size oscillates; ``shift``: colour drifts to another
colour over the video; ``zigzag``: jittery side-to-side motion), so a single frame cannot always tell them
apart. Videos have textured backgrounds with static clutter, a slowly panning camera, smooth motion with
scale change, mutual occlusion, objects entering/leaving the frame, and unlabelled distractor shapes in
colours no class uses. Everything is drawn from ``numpy.random.default_rng([seed, video_index])``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hvpl.data.masks import encode_track
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import staged_dir, write_json

CLASS_SPECS = [  # (shape, colour, behaviour); category id = index + 1
    ("circle", "red", "steady"), ("square", "blue", "steady"), ("triangle", "red", "steady"),
    ("star", "blue", "steady"), ("circle", "red", "pulse"), ("square", "blue", "shift"),
    ("triangle", "blue", "steady"), ("star", "red", "zigzag"), ("circle", "blue", "steady"),
    ("square", "red", "pulse"), ("triangle", "red", "shift"), ("star", "blue", "pulse"),
    ("diamond", "green", "steady"), ("diamond", "green", "zigzag"), ("cross", "yellow", "steady"),
    ("cross", "yellow", "pulse"),
]
COLOURS = {"red": (205, 45, 40), "blue": (40, 75, 210), "green": (45, 165, 60), "yellow": (225, 200, 45)}
SHIFT_TARGET = {"red": "yellow", "blue": "green", "green": "blue", "yellow": "red"}
DISTRACTOR_COLOURS = [(150, 70, 170), (140, 140, 140), (235, 235, 225), (120, 80, 45)]
DISTRACTOR_SHAPES = ["ellipse", "bar", "circle", "square", "triangle", "star"]

DEFAULT_STYLE = {
    "radius": (0.10, 0.19),          # object radius as a fraction of min(H, W)
    "scale_drift": (0.75, 1.35),     # total size factor over a video (every object)
    "pulse_amplitude": 0.35,         # relative size oscillation of 'pulse' classes
    "pulse_period": 4.0,             # frames
    "zigzag_amplitude": 0.10,        # alternating side offset (fraction of min(H, W)) of 'zigzag' classes
    "curvature": 0.12,               # max sideways bend of ordinary paths (fraction of min(H, W))
    "spin": 0.35,                    # max rotation per frame (radians)
    "colour_jitter": 18.0,           # per-instance RGB jitter
    "shading": 0.22,                 # strength of the linear lighting gradient on objects
    "enter_leave_prob": 0.3,         # chance an instance starts or ends outside the frame
    "max_distractors": 2,
    "clutter_blobs": (3, 7),         # static background blobs per video
    "stripe_amplitude": 22.0,
    "stripe_period": (5.0, 14.0),    # pixels
    "noise_std": 5.0,                # per-frame pixel noise
    "pan": 0.12,                     # camera pan over the video (fraction of the frame size)
    "jpeg_quality": 90,
    "max_attempts": 20,              # re-draws of a video whose instances are all hidden
}


def class_specs(num_classes: int) -> list[tuple[str, str, str]]:
    if not 2 <= num_classes <= len(CLASS_SPECS):
        raise HVPLError(f"synthetic: num_classes must be in 2..{len(CLASS_SPECS)}, got {num_classes}")
    return CLASS_SPECS[:num_classes]


def class_name(spec: tuple[str, str, str]) -> str:
    shape, colour, behaviour = spec
    return f"{colour}_{shape}" + ("" if behaviour == "steady" else f"_{behaviour}")


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in unit local coordinates u, v (H, W) -> bool (H, W); shapes span about [-1, 1]."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
    if shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return np.all([u * np.cos(a) + v * np.sin(a) <= 0.55 for a in angles], axis=0)
    if shape == "star":
        phi = np.arctan2(v, u)
        return r <= 0.45 + 0.6 * ((np.cos(5 * phi) + 1) / 2) ** 2
    if shape == "ellipse":
        return u ** 2 + (v / 0.5) ** 2 <= 1.0
    if shape == "bar":
        return (np.abs(u) <= 1.1) & (np.abs(v) <= 0.22)
    raise ValueError(f"unknown shape {shape}")


def _smooth_noise(rng, h: int, w: int, cells: int, low: float, high: float) -> np.ndarray:
    """Low-frequency RGB noise (h, w, 3): a random cells x cells grid upsampled bilinearly."""
    grid = rng.uniform(low, high, size=(cells, cells, 3)).astype(np.float32)
    chans = [np.asarray(Image.fromarray(grid[..., c]).resize((w, h), Image.BILINEAR)) for c in range(3)]
    return np.stack(chans, axis=-1)


def make_background(rng, h: int, w: int, style: dict) -> np.ndarray:
    """Textured, cluttered background (h, w, 3) float32: smooth colour noise + stripes + static blobs."""
    bg = _smooth_noise(rng, h, w, cells=4, low=70.0, high=180.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    beta = rng.uniform(0, np.pi)
    period = rng.uniform(*style["stripe_period"])
    stripes = np.sin(2 * np.pi * (xx * np.cos(beta) + yy * np.sin(beta)) / period)
    bg += style["stripe_amplitude"] * stripes[..., None] * rng.uniform(0.3, 1.0, size=3)
    size = min(h, w)
    for _ in range(rng.integers(*style["clutter_blobs"], endpoint=True)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rad = rng.uniform(0.03, 0.08) * size
        theta = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / rad
        v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / rad
        blob = shape_mask("ellipse", u, v)
        bg[blob] = bg[blob] * 0.5 + rng.uniform(60, 190, size=3) * 0.5
    return bg


def _path_point(rng, h, w, radius, outside: bool) -> np.ndarray:
    if not outside:
        return np.array([rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)])
    side = rng.integers(4)
    along = rng.uniform(0.2, 0.8)
    margin = radius * rng.uniform(1.1, 1.6)
    return np.array([[-margin, along * h], [w + margin, along * h], [along * w, -margin], [along * w, h + margin]][side])


def make_object(rng, h, w, style, *, shape, colour, behaviour, labelled: bool) -> dict:
    """Random motion/appearance parameters of one object for one video."""
    size = min(h, w)
    radius = rng.uniform(*style["radius"]) * size
    enter_leave = labelled and rng.random() < style["enter_leave_prob"]
    outside_end = rng.integers(2) if enter_leave else -1
    p0 = _path_point(rng, h, w, radius, outside_end == 0)
    p1 = _path_point(rng, h, w, radius, outside_end == 1)
    colour = np.asarray(colour, dtype=np.float32) + rng.uniform(-1, 1, 3) * style["colour_jitter"]
    return {"shape": shape, "behaviour": behaviour, "labelled": labelled, "radius": radius, "p0": p0, "p1": p1,
            "bend": rng.uniform(-1, 1) * style["curvature"] * size, "growth": rng.uniform(*style["scale_drift"]),
            "theta": rng.uniform(0, 2 * np.pi), "spin": rng.uniform(-1, 1) * style["spin"],
            "phase": rng.uniform(0, 2 * np.pi), "light": rng.uniform(0, 2 * np.pi),
            "zig_sign": rng.choice([-1.0, 1.0]), "colour": colour, "shift_to": None}


def object_state(obj: dict, t: int, length: int, size: int, style: dict):
    """(centre (2,), radius, rotation, rgb (3,)) of ``obj`` at frame t."""
    s = t / max(length - 1, 1)
    d = obj["p1"] - obj["p0"]
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
    centre = obj["p0"] + d * s + normal * obj["bend"] * np.sin(np.pi * s)
    radius = obj["radius"] * obj["growth"] ** s
    colour = obj["colour"]
    if obj["behaviour"] == "pulse":
        radius *= 1 + style["pulse_amplitude"] * np.sin(2 * np.pi * t / style["pulse_period"] + obj["phase"])
    elif obj["behaviour"] == "zigzag":
        centre = centre + normal * obj["zig_sign"] * style["zigzag_amplitude"] * size * (-1) ** t
    elif obj["behaviour"] == "shift":
        colour = colour + (obj["shift_to"] - colour) * s
    return centre, radius, obj["theta"] + obj["spin"] * t, colour


def render_frame(bg: np.ndarray, objects: list[dict], t: int, length: int, grid, style: dict, rng):
    """Draw ``objects`` (far -> near) on ``bg`` -> (uint8 image (H, W, 3), full masks list of bool (H, W))."""
    yy, xx = grid
    img = bg.copy()
    masks = []
    for obj in objects:
        centre, radius, theta, colour = object_state(obj, t, length, min(bg.shape[:2]), style)
        dx, dy = xx - centre[0], yy - centre[1]
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / radius
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / radius
        mask = shape_mask(obj["shape"], u, v)
        shade = 1 + style["shading"] * (u * np.cos(obj["light"]) + v * np.sin(obj["light"]))
        img[mask] = colour[None, :] * shade[mask][:, None]
        masks.append(mask)
    img += rng.normal(0, style["noise_std"], size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def visible_masks(full: list[np.ndarray]) -> list[np.ndarray]:
    """Full masks in far -> near order -> the visible part of each (not covered by a nearer object)."""
    covered = np.zeros_like(full[0])
    out = [None] * len(full)
    for i in range(len(full) - 1, -1, -1):
        out[i] = full[i] & ~covered
        covered |= full[i]
    return out


def _video_objects(rng, h, w, style, specs, primary: int, max_instances: int):
    """Objects in depth order (far -> near); labelled ones carry ``category_id``."""
    n_inst = int(rng.integers(1, max_instances, endpoint=True))
    cats = [primary] + [int(rng.integers(len(specs))) for _ in range(n_inst - 1)]
    objects = []
    for cat in cats:
        shape, colour, behaviour = specs[cat]
        obj = make_object(rng, h, w, style, shape=shape, colour=COLOURS[colour], behaviour=behaviour, labelled=True)
        obj["shift_to"] = np.asarray(COLOURS[SHIFT_TARGET[colour]], dtype=np.float32)
        obj["category_id"] = cat + 1
        objects.append(obj)
    for _ in range(rng.integers(0, style["max_distractors"], endpoint=True)):
        shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
        colour = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
        objects.append(make_object(rng, h, w, style, shape=shape, colour=colour, behaviour="steady", labelled=False))
    return [objects[i] for i in rng.permutation(len(objects))]


def render_video(rng, *, num_frames, height, width, style, specs, primary, max_instances):
    """One video -> (frames uint8 (T, H, W, 3), [(category_id, visible masks (T, H, W))]) or None if all hidden."""
    pad_y, pad_x = int(round(style["pan"] * height)), int(round(style["pan"] * width))
    big = make_background(rng, height + pad_y, width + pad_x, style)
    start, end = rng.integers(0, [pad_y + 1, pad_x + 1]), rng.integers(0, [pad_y + 1, pad_x + 1])
    objects = _video_objects(rng, height, width, style, specs, primary, max_instances)
    grid = np.mgrid[0:height, 0:width].astype(np.float32)
    frames, per_obj = [], [[] for _ in objects]
    for t in range(num_frames):
        s = t / max(num_frames - 1, 1)
        oy, ox = np.round(start + (end - start) * s).astype(int)
        img, full = render_frame(big[oy:oy + height, ox:ox + width], objects, t, num_frames, grid, style, rng)
        frames.append(img)
        for i, m in enumerate(visible_masks(full)):
            per_obj[i].append(m)
    tracks = [(obj["category_id"], np.stack(ms)) for obj, ms in zip(objects, per_obj)
              if obj["labelled"] and np.stack(ms).any()]
    return (np.stack(frames), tracks) if tracks else None


def _primary_classes(num_videos: int, num_classes: int, seed: int) -> list[int]:
    """Balanced primary class per video: each round of num_classes videos is a seeded permutation."""
    rng = np.random.default_rng([seed, num_videos, num_classes])
    rounds = -(-num_videos // num_classes)
    return [int(c) for _ in range(rounds) for c in rng.permutation(num_classes)][:num_videos]


def _render_all(frames_root: Path, specs, *, num_videos, num_frames, height, width, max_instances, seed, style,
                num_classes) -> tuple[list, list]:
    """Render every video's frames as JPEGs under ``frames_root`` -> (videos, annotations) of train.json."""
    videos, annotations = [], []
    for index, primary in enumerate(_primary_classes(num_videos, num_classes, seed)):
        rng = np.random.default_rng([seed, index])
        for _ in range(style["max_attempts"]):
            result = render_video(rng, num_frames=num_frames, height=height, width=width, style=style,
                                  specs=specs, primary=primary, max_instances=max_instances)
            if result is not None:
                break
        else:
            raise HVPLError(f"synthetic: video {index}: every instance stayed hidden in {style['max_attempts']} draws")
        frames, tracks = result
        name = f"synth_{index:05d}"
        (frames_root / name).mkdir(parents=True, exist_ok=True)
        file_names = [f"{name}/{t:05d}.jpg" for t in range(num_frames)]
        for img, fname in zip(frames, file_names):
            Image.fromarray(img).save(frames_root / fname, quality=style["jpeg_quality"])
        vid = index + 1
        videos.append({"id": vid, "width": width, "height": height, "length": num_frames, "file_names": file_names})
        for cat, masks in tracks:
            segs, areas, boxes = encode_track(masks)
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "category_id": cat, "iscrowd": 0,
                                 "segmentations": segs, "areas": areas, "bboxes": boxes})
    return videos, annotations


def generate_synthetic(out_dir: Path, *, num_classes, num_videos, num_frames, height, width, max_instances, seed,
                       style: dict | None = None) -> Path:
    """Write the synthetic dataset; returns the path of ``out_dir/train.json``. The frames and train.json are
    written into a staged folder next to ``out_dir`` and moved into it when complete (the frame folder replacing
    an older one whole), so an interrupted run or a full disk leaves neither a partial frame folder nor a JSON
    pointing at one."""
    specs = class_specs(num_classes)
    if num_videos < 1 or num_frames < 1 or max_instances < 1 or min(height, width) < 16:
        raise HVPLError(f"synthetic: need num_videos, num_frames, max_instances >= 1 and height, width >= 16 "
                        f"(got {num_videos}, {num_frames}, {max_instances}, {height}x{width})")
    style = {**DEFAULT_STYLE, **(style or {})}
    out_dir = Path(out_dir)
    categories = [{"id": i + 1, "name": class_name(s), "supercategory": s[0]} for i, s in enumerate(specs)]
    info = {"description": "hvpl synthetic continual VIS benchmark", "seed": seed,
            "classes": [{"id": i + 1, "shape": s[0], "colour": s[1], "behaviour": s[2]} for i, s in enumerate(specs)]}
    with staged_dir(out_dir) as stage:
        videos, annotations = _render_all(stage / "train" / "JPEGImages", specs, num_videos=num_videos,
                                          num_frames=num_frames, height=height, width=width,
                                          max_instances=max_instances, seed=seed, style=style,
                                          num_classes=num_classes)
        write_json(stage / "train.json", {"info": info, "videos": videos, "annotations": annotations,
                                          "categories": categories}, indent=None)
    return out_dir / "train.json"
