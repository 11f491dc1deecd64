"""Sizes of the committed parity fixtures (tests/data/parity/): a reduced model both sides can build.

The authors' code fixes the width (GrootVLayer(channels=256)) and at most 6 tree-scan layers; everything else
is reduced: ResNet-18 channels (backbone features are recipe inputs, the backbone itself is not run), 1
pixel-decoder layer, 3 frame-decoder layers, 10 frame / clip queries, 2 tree-scan and 2 clip-decoder layers,
FFN 128, 4 + 2 + 2 classes, 3 prompts per task, 2 frames of 40 x 72 (padded to 64 x 96). No model imports.
"""
WEIGHT_SEED = 11          # recipe seed of the weights
INPUT_SEED = 12           # recipe seed of the backbone features
TASKS = (0, 1, 2)
NUM_FRAMES = 2
IMAGE_SIZE = (40, 72)     # valid input H x W (zero-padded to PADDED_SIZE by both)
PADDED_SIZE = (64, 96)
ORIG_SIZE = (50, 90)      # size the masks are resized to
BACKBONE_CHANNELS = (64, 128, 256, 512)
BASE, INCREMENT, PROMPTS = 4, 2, 3
LOGIT_DELTAS = [0.4, 0.5]
QUERIES = 10
FRAME_LAYERS, CLIP_LAYERS, TREE_LAYERS, FFN = 3, 2, 2, 128
SAMPLES = 256             # entries kept of a large tensor (plus its max, sum and absolute sum)


def authors_opts(task: int) -> list:
    """detectron2 options on top of the 20-2 script's (authors_env.script_opts)."""
    opts = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", str(BACKBONE_CHANNELS[0]),
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
            "MODEL.MASK_FORMER.DEC_LAYERS", str(FRAME_LAYERS + 1), "MODEL.MASK_FORMER.DIM_FEEDFORWARD", str(FFN),
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", str(QUERIES), "MODEL.VITA.NUM_OBJECT_QUERIES", str(QUERIES),
            "MODEL.VITA.ENC_LAYERS", str(TREE_LAYERS), "MODEL.VITA.DEC_LAYERS", str(CLIP_LAYERS),
            "MODEL.VITA.DIM_FEEDFORWARD", str(FFN), "CONT.BASE_CLS", str(BASE), "CONT.INC_CLS", str(INCREMENT)]
    if task > 0:
        opts += ["CONT.NUM_PROMPTS", str(PROMPTS)]
    return opts


def model_config(paper_cfg: dict) -> dict:
    """hvpl's model config of the fixtures, from config/models/paper_r50.yaml's dict."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in paper_cfg.items()}
    cfg["name"] = "parity_fixture"
    cfg["backbone"] = dict(cfg["backbone"], type="tiny", channels=list(BACKBONE_CHANNELS), weights=None)
    cfg["pixel_decoder"] = dict(cfg["pixel_decoder"], num_layers=1)
    cfg["frame_decoder"] = dict(cfg["frame_decoder"], num_layers=FRAME_LAYERS, ffn_dim=FFN, num_queries=QUERIES)
    cfg["video_decoder"] = dict(cfg["video_decoder"], num_queries=QUERIES, enc_layers=TREE_LAYERS,
                                dec_layers=CLIP_LAYERS, ffn_dim=FFN, tree_scan=dict(cfg["video_decoder"]["tree_scan"]))
    cfg["inference"] = dict(cfg["inference"], authors_compat=False)
    return cfg


def classes(task: int) -> list:
    return [BASE] + [INCREMENT] * task
