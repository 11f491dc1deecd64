"""Sizes and seeds shared by both sides of the parity tool (no imports of either model).

Defaults below; ``PARITY_WEIGHT_SEED``, ``PARITY_INPUT_SEED``, ``PARITY_IMAGE_SIZE`` / ``PARITY_ORIG_SIZE``
("HxW") and ``PARITY_FRAMES`` override them (run.sh passes the environment to both sides).
"""
import os


def _size(name: str, default: tuple) -> tuple:
    text = os.environ.get(name)
    return default if not text else tuple(int(v) for v in text.lower().split("x"))


WEIGHT_SEED = int(os.environ.get("PARITY_WEIGHT_SEED", 20250801))   # random weights in the authors' naming
INPUT_SEED = int(os.environ.get("PARITY_INPUT_SEED", 7))             # images and probe inputs
NUM_FRAMES = int(os.environ.get("PARITY_FRAMES", 3))                 # frames of the probe video
IMAGE_SIZE = _size("PARITY_IMAGE_SIZE", (100, 150))   # input H x W (not a multiple of 32: both zero-pad to 128 x 160)
ORIG_SIZE = _size("PARITY_ORIG_SIZE", (130, 190))     # "original" video size the masks are resized to
SIZE_DIVISIBILITY = 32                                # both models pad the input to a multiple of this
PADDED_SIZE = tuple(-(-s // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY for s in IMAGE_SIZE)
GRID_SHAPE = (2, 6, 7)          # (B, H, W) of the shared grid fed to one tree-scan layer / the 6-layer stack
CLIP_T, CLIP_B = 5, 2           # clip-decoder probe: frames (the authors' training path needs INPUT.SAMPLING_FRAME_NUM = 5) and videos
