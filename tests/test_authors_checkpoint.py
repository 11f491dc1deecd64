"""hvpl.engine.authors_checkpoint (+ the naming rules of hvpl.engine.init_weights): the authors' checkpoints load
completely into our step-t model, values in the right places, and run through `hvpl convert` / `predict`."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from authors_naming import authors_keys, authors_state
from hvpl.cli import main
from hvpl.config import classes_per_step, load_run_config
from hvpl.continual.growth import set_trainable
from hvpl.engine.authors_checkpoint import convert_state, load_model_or_authors
from hvpl.engine.init_weights import detectron2_target, load_init_weights, match_state
from hvpl.engine.model_file import load_model_file, rebuild_model
from hvpl.model.hvpl import HVPLModel, without_weight_files
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json

PAPER = "ytvis2019_20-2"          # the scenario of the authors' key lists
CONV_BIAS = r"video_decoder\.context_encoder\.layers\.\d+\.ssm\.conv\.bias"
NO_COUNTERPART = {"criterion.empty_weight", "vita_criterion.empty_weight"}


def _paper_model(step: int, device: str = "meta") -> tuple[HVPLModel, dict]:
    cfg = load_run_config(PAPER, "hvpl")
    with torch.device(device):
        model = HVPLModel(without_weight_files(cfg["model"]), "hvpl", cfg["scenario"]["prompts_per_task"],
                          classes_per_step(cfg["scenario"])[:step + 1])
    return model, cfg


def _smoke_model(step: int, seed: int = 0) -> tuple[HVPLModel, dict]:
    """A reduced-size (tiny) step-``step`` model with random values everywhere (no zero prompt, no copied head)."""
    cfg = load_run_config("synth_smoke", "hvpl")
    torch.manual_seed(seed)
    model = HVPLModel(cfg["model"], "hvpl", cfg["scenario"]["prompts_per_task"],
                      classes_per_step(cfg["scenario"])[:step + 1])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model, cfg


@pytest.mark.parametrize("step", [0, 1, 2])
def test_fake_naming_is_the_authors_at_paper_size(step):
    """The test helper's naming (tests/authors_naming.py) is the authors' exactly: names and shapes of their key
    lists, so the reduced fakes below are in their naming too."""
    model, cfg = _paper_model(step)
    mine = {k: tuple(v.shape) for k, v in authors_state(model, cfg["model"]).items()}
    theirs = {k: tuple(v["shape"]) for k, v in authors_keys(step)["tensors"].items()}
    assert mine == theirs


@pytest.mark.parametrize("step", [0, 1, 2])
def test_every_authors_tensor_has_its_place_at_paper_size(step):
    """Every tensor of the authors' step-t model lands on one of ours of its shape (but the loss buffers), and every
    tensor of ours is given (but the conv biases their layer lacks, set to zero)."""
    model, _ = _paper_model(step)
    own = model.state_dict()
    state = {k: torch.empty(v["shape"], device="meta") for k, v in authors_keys(step)["tensors"].items()}
    match = match_state(state, own, detectron2=True)
    assert set(match.unused) == NO_COUNTERPART and not match.mismatched and not match.partial
    assert match.not_loaded(own) == []
    assert set(match.absent) == {k for k in own if re.fullmatch(CONV_BIAS, k)}


@pytest.mark.parametrize("step", [1, 2])
def test_authors_trainable_tensors_are_ours(step):
    """The tensors their step-t model trains (key lists' flags) map exactly onto what ours trains: the newest
    prompt groups, the newest class heads and the no-object heads; an independent check of head and group order."""
    model, _ = _paper_model(step)
    set_trainable(model, "hvpl", step)
    ours = {n for n, p in model.named_parameters() if p.requires_grad}
    theirs = {detectron2_target(k).name for k, v in authors_keys(step)["tensors"].items() if v["trainable"]}
    assert theirs == ours


def test_values_land_in_place():
    """Round trip at reduced size, and named spots: a transposed 3x3 kernel, a squeezed x_proj, a positional prompt
    row, a task head and the no-object head."""
    src, cfg = _smoke_model(2)
    state = authors_state(src, cfg["model"])
    ckpt = convert_state(state, cfg, 2, list(range(1, 7)), "fake.pth")
    got = ckpt["model"]
    for k, v in src.state_dict().items():
        if re.fullmatch(CONV_BIAS, k):
            assert torch.equal(got[k], torch.zeros_like(v)), k
        elif not k.endswith("stride_in_1x1"):
            assert torch.equal(got[k], v), k
    scan = "video_decoder.context_encoder.layers.0.ssm."
    kernel = state["vita_module.enc_mamba.0.TreeSSM.conv2d.weight"]
    assert torch.equal(got[scan + "conv.weight"], kernel.transpose(-1, -2))
    assert not torch.equal(kernel, kernel.transpose(-1, -2))
    assert torch.equal(got[scan + "x_proj.weight"], state["vita_module.enc_mamba.0.TreeSSM.x_proj_weight"][0])
    assert torch.equal(got["frame_decoder.prompts.1.pos"][2], state["sem_seg_head.predictor.prompt_embed.1.2.weight"])
    assert torch.equal(got["video_classifier.heads.2.layers.2.bias"],
                       state["vita_module.class_embed.cls.3.layers.2.bias"])
    assert torch.equal(got["frame_classifier.no_object.layers.0.weight"],
                       state["sem_seg_head.predictor.class_embed.cls.0.layers.0.weight"])
    assert ckpt["step"] == 2 and ckpt["classes_per_task"] == [2, 2, 2] and ckpt["method"] == "hvpl"


def test_transposed_kernel_convolves_the_same_query_neighbours(tmp_path):
    """Their depthwise conv runs on a (query, layer*batch) grid, ours on (frame, query): with the converted kernel
    our conv over the transposed grid gives their output transposed (the tap along queries is the same tap)."""
    src, cfg = _smoke_model(0)
    state = authors_state(src, cfg["model"])
    kernel = state["vita_module.enc_mamba.0.TreeSSM.conv2d.weight"].double()
    dst, _ = _smoke_model(0, seed=1)
    load_init_weights(dst, _save(state, tmp_path / "model_final.pth"))
    conv = dst.video_decoder.context_encoder.layers[0].ssm.conv.double()
    inner = kernel.shape[0]
    grid = torch.randn(1, inner, 5, 3, dtype=torch.float64)      # theirs: (1, D, queries, layer*batch)
    theirs = F.conv2d(grid, kernel, padding=1, groups=inner)
    ours = conv(grid.transpose(2, 3)).transpose(2, 3)              # ours: (1, D, frames, queries)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)


def _save(state: dict, path) -> str:
    """Write ``state`` as detectron2 does (``{"model": state, "iteration": n, ...}``)."""
    torch.save({"model": state, "iteration": 9, "__author__": "fake"}, path)
    return str(path)


def test_step0_init_takes_heads_and_tree_scan(tmp_path, capsys):
    """An authors' step-0 model_final.pth as scenario.train.init_weights fills every tensor of our step-0 model."""
    src, cfg = _smoke_model(0)
    dst, _ = _smoke_model(0, seed=1)
    report = load_init_weights(dst, _save(authors_state(src, cfg["model"]), tmp_path / "model_final.pth"))
    assert report["not_loaded"] == [] and set(report["unused"]) == NO_COUNTERPART
    assert torch.equal(dst.frame_classifier.heads[0].layers[2].weight, src.frame_classifier.heads[0].layers[2].weight)
    assert "0 of ours not in the file" in capsys.readouterr().err


def test_mismatches_are_clear_errors(tmp_path):
    src, cfg = _smoke_model(1)
    state = authors_state(src, cfg["model"])
    with pytest.raises(HVPLError, match=r"fake: sem_seg_head.predictor.class_embed.cls: 2 task heads \[2, 2\], "
                                        r"a step-1 model, not step 2"):
        convert_state(state, cfg, 2, list(range(1, 7)), "fake")
    other = load_run_config("synth_smoke", "hvpl", None, ["scenario.prompts_per_task=3"])
    with pytest.raises(HVPLError, match="2 prompts per task, scenario 'synth_smoke' has 3"):
        convert_state(state, other, 1, list(range(1, 7)), "fake")
    gone = {k: v for k, v in state.items() if k != "vita_module.prompt_fq_pos.0.weight"}
    with pytest.raises(HVPLError, match=r"fake: 1 tensors of this model are missing: video_decoder.prompts.0.fq_pos"):
        convert_state(gone, cfg, 1, list(range(1, 7)), "fake")
    odd = dict(state, **{"vita_module.prompt_no_obj_embed.0.weight": torch.zeros(1)})
    with pytest.raises(HVPLError, match="1 tensors have no place in this model: vita_module.prompt_no_obj_embed"):
        convert_state(odd, cfg, 1, list(range(1, 7)), "fake")
    path = _save(state, tmp_path / "model_final.pth")
    with pytest.raises(HVPLError, match="an authors' detectron2 checkpoint: its scenario must be given"):
        load_model_or_authors(path)


def test_cli_convert_and_predict_an_authors_checkpoint(tiny_split_dir, tmp_path, capsys):
    """`hvpl convert` writes our model_final.pth; `hvpl predict` reads the authors' file directly with the same
    result; wrong inputs exit 2 with the reason."""
    src, cfg = _smoke_model(1)
    authors = _save(authors_state(src, cfg["model"]), tmp_path / "authors_step1.pth")
    classes = str(tiny_split_dir / "classes.json")
    out = tmp_path / "converted" / "model_final.pth"
    assert main(["convert", "--in", authors, "--scenario", "synth_smoke", "--classes", classes, "--out", str(out)]) == 0
    ckpt = load_model_file(out)
    assert ckpt["step"] == 1 and ckpt["class_order"] == read_json(tiny_split_dir / "classes.json")["class_order"][:4]
    assert ckpt["converted_from"] == {"file": authors, "iteration": 9}
    rebuild_model(ckpt)    # strict load
    test_json = str(tiny_split_dir / "test_step1.json")
    common = ["--test-json", test_json, "--max-videos", "2"]
    assert main(["predict", "--model", str(out), "--out", str(tmp_path / "a.json"), *common]) == 0
    assert main(["predict", "--model", authors, "--scenario", "synth_smoke", "--classes", classes,
                 "--out", str(tmp_path / "b.json"), *common]) == 0
    direct, converted = read_json(tmp_path / "b.json"), read_json(tmp_path / "a.json")
    assert direct and direct == converted
    assert main(["predict", "--model", authors, "--out", str(tmp_path / "c.json"), *common]) == 2
    assert "its scenario must be given (--scenario" in capsys.readouterr().err
    assert main(["convert", "--in", authors, "--scenario", "synth_smoke", "--step", "0", "--out",
                 str(tmp_path / "x.pth")]) == 2
    assert "a step-1 model, not step 0" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
    assert main(["predict", "--model", authors, "--scenario", "synth_smoke", "--classes", str(tmp_path / "no.json"),
                 "--out", str(tmp_path / "d.json"), *common]) == 2
    assert "no.json: not found" in capsys.readouterr().err


def test_train_and_ogc_memory_continue_from_an_authors_checkpoint(tiny_split_dir, tmp_path):
    """`ogc-memory` / `train --prev-model` read an authors' step-0 file directly: step 1 grows its weights."""
    from hvpl.continual.ogc import build_memory
    from hvpl.engine.trainer import train_step

    src, cfg = _smoke_model(0)
    authors = _save(authors_state(src, cfg["model"]), tmp_path / "authors_step0.pth")
    cfg = load_run_config("synth_smoke", "hvpl", None, ["scenario.train.inc_iters=1", "scenario.train.ogc_samples=2"])
    basis = tmp_path / "ogc_basis.pt"
    build_memory(cfg, step=1, prev_model=authors, train_json=tiny_split_dir / "train_step0.json", out=basis)
    final = train_step(cfg, step=1, train_json=tiny_split_dir / "train_step1.json", out_dir=tmp_path / "step1",
                       prev_model=authors, ogc_basis=basis)
    model = rebuild_model(load_model_file(final)).state_dict()
    head = "frame_classifier.heads.0.layers.2.weight"
    assert torch.equal(model[head], src.state_dict()[head])   # the frozen base head, from the authors' file
    assert model["frame_classifier.heads.1.layers.2.weight"].shape[0] == 2


def test_pickle_and_ddp_prefix_read_alike(tmp_path):
    """A detectron2 ``.pkl`` (numpy arrays) and a state saved with DistributedDataParallel's ``module.`` prefix
    convert to the same model file as the plain ``.pth``."""
    import pickle

    src, cfg = _smoke_model(1)
    state = authors_state(src, cfg["model"])
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "fake"}, f)
    _save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    plain = load_model_or_authors(_save(state, tmp_path / "model_final.pth"), cfg)["model"]
    for name in ("model_final.pkl", "ddp.pth"):
        other = load_model_or_authors(tmp_path / name, cfg, step=1)["model"]
        assert other.keys() == plain.keys() and all(torch.equal(other[k], plain[k]) for k in plain), name
