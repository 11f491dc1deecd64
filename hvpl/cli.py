"""The ``hvpl`` command line: one place for every subcommand; the work lives in the library modules.

Every subcommand turns an :class:`HVPLError` into ``error: <message>`` on stderr and exit code 2, and so an
OSError (a full disk, a read-only folder): ``error: <path>: no space left on device``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hvpl.utils.errors import HVPLError


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (argparse reports anything else as a usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value
    parse.__name__ = f"integer >= {low}"   # argparse names the type in its message
    return parse


COUNT = _int_at_least(1)       # threads, videos, sizes
INDEX = _int_at_least(0)       # steps, seeds, worker processes


def _add_run_config_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    p.add_argument("--scenario", required=True, help="scenario name in config/scenarios/ or a YAML path")
    if method:
        from hvpl.continual.methods import METHODS

        p.add_argument("--method", default="hvpl", help=", ".join(METHODS))
    p.add_argument("--model", default=None, help="model size in config/models/ (default: the scenario's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. scenario.train.inc_iters=50 (repeatable)")


def _add_compute_args(p: argparse.ArgumentParser, workers: bool = False) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=COUNT, default=None, help="torch CPU threads (default: torch's)")
    if workers:
        p.add_argument("--workers", type=INDEX, default=None,
                       help="data-loading processes per training/inference process; results do not depend on it "
                            "(default: 0 on CPU, on CUDA the process's threads - 1, between 1 and 4)")


def _run_config(args):
    from hvpl.config import load_run_config
    from hvpl.continual.growth import check_model_builds

    cfg = load_run_config(args.scenario, getattr(args, "method", "hvpl"), args.model, args.overrides)
    if any(item.startswith("model.") for item in args.overrides or ()):
        check_model_builds(cfg)
    return cfg


def cmd_synth(args):
    from hvpl.config import load_scenario
    from hvpl.data.synthetic import generate_synthetic

    scenario = load_scenario(args.scenario)
    spec = dict(scenario.get("synthetic") or {})
    if not spec:
        raise HVPLError(f"scenario '{args.scenario}' has no 'synthetic' section")
    for key in ("num_videos", "num_frames", "height", "width", "seed"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    generate_synthetic(Path(args.out), num_classes=scenario["num_classes"], **spec)


def cmd_split(args):
    from hvpl.config import load_scenario
    from hvpl.data.splits import make_scenario_split

    scenario = load_scenario(args.scenario)
    root = args.data_root or (scenario.get("data") or {}).get("root")   # neither: $DATASETS_ROOT (data/ytvis.py)
    make_scenario_split(scenario, Path(root) if root else None, Path(args.out), seed=args.seed,
                        order_index=args.order)


def cmd_evaluate(args):
    from hvpl.evaluation.evaluate import evaluate_files

    metrics = evaluate_files(args.gt, args.results, args.out, classes_path=args.classes, step=args.step)
    if args.tensorboard:
        from hvpl.utils.tensorboard import write_eval_scalars

        if args.step is None:
            raise HVPLError("evaluate: --tensorboard needs --step (the x value of the eval/* scalars)")
        write_eval_scalars(args.tensorboard, metrics, args.step)


def cmd_forgetting(args):
    from hvpl.evaluation.forgetting import forgetting_files

    forgetting_files(args.metrics, args.classes, args.out, matrix_path=args.matrix)


def cmd_summarize(args):
    from hvpl.evaluation.summary import summarize

    results = Path(args.results_dir)
    summarize(results, Path(args.out or results / "summary.csv"), Path(args.plots_dir or results / "plots"),
              runs=args.runs, tables_dir=Path(args.tables_dir or results / "tables"))


def cmd_pack(args):
    from hvpl.evaluation.pack import pack_results

    pack_results(Path(args.predictions), Path(args.test_json), Path(args.out),
                 classes_json=_classes_file(args), class_indices=args.class_indices)


def cmd_visualize(args):
    from hvpl.evaluation.visualize import visualize_files

    visualize_files(Path(args.test_json), [Path(p) for p in args.predictions], Path(args.out_dir),
                    labels=args.label, video_ids=args.video_ids, num_videos=args.num_videos,
                    columns=args.columns, topk=args.topk, min_score=args.min_score, gif=args.gif,
                    classes_json=_classes_file(args), image_root=args.image_root, display_height=args.height)


def cmd_params(args):
    from hvpl.continual.growth import count_parameters

    trainable, total = count_parameters(_run_config(args), args.step)
    print(f"scenario: {args.scenario}\nmethod: {args.method}\nstep: {args.step}")
    print(f"trainable_parameters: {trainable}\ntotal_parameters: {total}")


def cmd_train(args):
    from hvpl.data.frame_check import default_frame_check
    from hvpl.engine.trainer import train_step

    train_step(_run_config(args), step=args.step, train_json=Path(args.train_json), out_dir=Path(args.out_dir),
               prev_model=args.prev_model, ogc_basis=args.ogc_basis, ckpt_dir=args.ckpt_dir, seed=args.seed,
               device=args.device, threads=args.threads, workers=args.workers,
               frame_check=args.frame_check or default_frame_check(), tensorboard_dir=args.tensorboard)


def cmd_ogc_memory(args):
    from hvpl.continual.ogc import build_memory

    build_memory(_run_config(args), step=args.step, prev_model=Path(args.prev_model),
                 train_json=Path(args.train_json), prev_basis=args.prev_basis, out=Path(args.out),
                 seed=args.seed, device=args.device, threads=args.threads)


def cmd_predict(args):
    from hvpl.config import load_run_config
    from hvpl.engine.predict import predict

    run_cfg = None
    if args.scenario:   # read only for an authors' checkpoint (ours records its scenario and model)
        run_cfg = load_run_config(args.scenario, "hvpl", args.model_size, args.overrides)
    elif args.model_size or args.overrides:
        raise HVPLError("--model-size / --set describe an authors' checkpoint and need --scenario")
    predict(Path(args.model_path), Path(args.test_json), Path(args.out), device=args.device,
            threads=args.threads, workers=args.workers, max_videos=args.max_videos,
            image_root=Path(args.image_root).resolve() if args.image_root else None, run_cfg=run_cfg,
            classes_json=_classes_file(args), authors_compat=True if args.authors_compat else None)


def _classes_file(args) -> Path | None:
    if args.classes and not Path(args.classes).is_file():
        raise HVPLError(f"--classes {args.classes}: not found")
    return Path(args.classes) if args.classes else None


def cmd_convert(args):
    from hvpl.engine.authors_checkpoint import convert_file

    convert_file(Path(args.in_path), _run_config(args), Path(args.out), step=args.step,
                 classes_json=_classes_file(args))


def cmd_claim_gpus(args):
    from hvpl.engine.gpu_claim import run_on_free_gpus

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    run_on_free_gpus(args.count, command, timeout_s=args.timeout)


def _add_synth_parser(sub) -> None:
    p = sub.add_parser("synth", help="write the synthetic benchmark in the YouTube-VIS layout")
    p.add_argument("--scenario", default="synth_4-2",
                   help="scenario with a 'synthetic' section: its classes and dataset settings (default synth_4-2)")
    p.add_argument("--out", required=True, help="dataset root: writes train.json and train/JPEGImages/")
    for key, kind, what in (("num_videos", COUNT, "videos to write"), ("num_frames", COUNT, "frames per video"),
                            ("height", COUNT, "frame height in pixels"), ("width", COUNT, "frame width in pixels"),
                            ("seed", INDEX, "generator seed")):
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None,
                       help=f"{what} (default: the scenario's synthetic.{key})")
    p.set_defaults(func=cmd_synth)


def _add_split_parser(sub) -> None:
    p = sub.add_parser("split", help="class-incremental split: classes.json, train_step{t}.json, test_step{t}.json")
    p.add_argument("--scenario", required=True, help="scenario name in config/scenarios/ or a YAML path")
    p.add_argument("--data-root", default=None,
                   help="dataset root (layouts of protocol.md Section 1; default: the scenario's data.root, "
                        "else $DATASETS_ROOT)")
    p.add_argument("--out", required=True, help="split folder: writes classes.json, train_step{t}.json, "
                                                "test_step{t}.json, split_info.json")
    p.add_argument("--seed", type=INDEX, default=None, help="re-split seed (default: the scenario's)")
    p.add_argument("--order", type=INDEX, default=0,
                   help="class order: 0 = the scenario's own, K >= 1 = a permutation drawn from K (recorded in "
                        "classes.json; same train/test videos as order 0)")
    p.set_defaults(func=cmd_split)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="YouTube-VIS AP/AR of a results file")
    p.add_argument("--gt", required=True, help="ground-truth YouTube-VIS JSON (e.g. test_step{t}.json)")
    p.add_argument("--results", required=True, help="predictions JSON of hvpl predict")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--classes", default=None, help="classes.json: adds per-task and old/new breakdowns")
    p.add_argument("--step", type=INDEX, default=None, help="the step these results belong to (with --classes)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also add the metrics (eval/*, at --step) to the run's TensorBoard folder DIR")
    p.set_defaults(func=cmd_evaluate)


def _add_forgetting_parser(sub) -> None:
    p = sub.add_parser("forgetting", help="FAP/FAR1 (class- and task-wise), standard forgetting, AP old/new")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of steps 0..t, in order")
    p.add_argument("--classes", required=True, help="classes.json of the split (the class ids of each step)")
    p.add_argument("--out", required=True, help="forgetting.json to write")
    p.add_argument("--matrix", default=None,
                   help="also write the task matrix R[i][j] (AP and AR1 of task j after step i) to this CSV")
    p.set_defaults(func=cmd_forgetting)


def _add_summarize_parser(sub) -> None:
    p = sub.add_parser("summarize", help="results/summary.csv and plots from every run")
    p.add_argument("--results-dir", default="results", help="root of the results layout (default: results)")
    p.add_argument("--out", default=None, help="default: RESULTS_DIR/summary.csv")
    p.add_argument("--plots-dir", default=None, help="default: RESULTS_DIR/plots")
    p.add_argument("--tables-dir", default=None,
                   help="paper-style tables <scenario>.md / .tex (default: RESULTS_DIR/tables)")
    p.add_argument("--runs", nargs="*", default=None, help="run folders (default: every run under results-dir)")
    p.set_defaults(func=cmd_summarize)


def _add_pack_parser(sub) -> None:
    p = sub.add_parser("pack", help="predictions -> the zip the YouTube-VIS/OVIS evaluation servers take "
                                    "(results.json at its root), checked against the split")
    p.add_argument("--predictions", required=True, help="predictions JSON of hvpl predict over the split")
    p.add_argument("--test-json", required=True,
                   help="the split predicted (e.g. the official valid.json, annotations null): every video must "
                        "have a prediction, every category id must be one of its categories")
    p.add_argument("--out", required=True, help="zip to write (e.g. submission.zip)")
    p.add_argument("--classes", default=None,
                   help="the split's classes.json: category ids must be among its classes")
    p.add_argument("--class-indices", action="store_true",
                   help="the predictions' category_id are 0-based indices into classes.json's class_order "
                        "(hvpl predict already writes category ids; needs --classes)")
    p.set_defaults(func=cmd_pack)


def _add_visualize_parser(sub) -> None:
    from hvpl.evaluation.visual_style import DEFAULT_COLUMNS, DEFAULT_HEIGHT, DEFAULT_VIDEOS

    p = sub.add_parser("visualize", help="overlay grids (PNG per video): ground truth and each predictions file "
                                         "over sampled frames")
    p.add_argument("--test-json", required=True, help="test JSON with frames (test_step{T}.json of the split)")
    p.add_argument("--predictions", nargs="+", required=True,
                   help="predictions JSON files, one grid row each (in this order)")
    p.add_argument("--out-dir", required=True, help="writes video<id>.png (and .gif with --gif) per video")
    p.add_argument("--label", action="append", default=None,
                   help="row label per predictions file (repeatable; default: method/step from the path "
                        "results/<scenario>/<method>/seed<k>/step<t>/predictions.json, else the file name)")
    p.add_argument("--video-ids", nargs="+", default=None, help="videos to draw (ids of the test JSON)")
    p.add_argument("--num-videos", type=COUNT, default=DEFAULT_VIDEOS,
                   help=f"without --video-ids: this many videos, picked deterministically to cover the classes "
                        f"of every step, earliest first (default {DEFAULT_VIDEOS})")
    p.add_argument("--columns", type=COUNT, default=DEFAULT_COLUMNS,
                   help=f"at most this many frames per row, sampled evenly over the video, first and last "
                        f"included (default {DEFAULT_COLUMNS})")
    p.add_argument("--height", type=COUNT, default=DEFAULT_HEIGHT,
                   help=f"height of a drawn frame in pixels (frames are downscaled; default {DEFAULT_HEIGHT})")
    p.add_argument("--topk", type=COUNT, default=None,
                   help="keep each video's k best-scoring predictions as evaluation sees them (default: the "
                        "scenario's detections_per_video when the path names the scenario, else all)")
    p.add_argument("--min-score", type=float, default=0.0, help="draw only tracks scoring at least this")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF per video (rows stacked)")
    p.add_argument("--classes", default=None, help="the split's classes.json: class names and steps (default: "
                                                   "the test JSON's categories)")
    p.add_argument("--image-root", default=None, help="frame folder (default: the JSON's image_root entry)")
    p.set_defaults(func=cmd_visualize)


def _add_params_parser(sub) -> None:
    p = sub.add_parser("params", help="trainable / total parameters of the model step T trains")
    _add_run_config_args(p)
    p.add_argument("--step", type=INDEX, required=True, help="step T (0 = the base step)")
    p.set_defaults(func=cmd_params)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train step T of one (scenario, method, seed)")
    _add_run_config_args(p)
    _add_compute_args(p, workers=True)
    p.add_argument("--step", type=INDEX, required=True, help="step T to train (0 = the base step)")
    p.add_argument("--seed", type=INDEX, default=0, help="training seed (default 0)")
    p.add_argument("--train-json", required=True, help="step T training JSON (train_step{T}.json of the split)")
    p.add_argument("--out-dir", required=True, help="writes model_final.pth and train_log.jsonl")
    p.add_argument("--prev-model", default=None, help="step T-1 model_final.pth (required for T >= 1)")
    p.add_argument("--ogc-basis", default=None, help="step T ogc_basis.pt (methods with OGC)")
    p.add_argument("--ckpt-dir", default=None,
                   help="periodic checkpoints (default: OUT_DIR/../checkpoints/<name of OUT_DIR>)")
    p.add_argument("--frame-check", choices=("decode", "exists"), default=None,
                   help="before training, decode every frame of the training JSON once (decode; remembered per "
                        "dataset in .hvpl_frames_checked.json) or only check the files exist (exists); default "
                        "$HVPL_FRAME_CHECK, else decode")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="the run's TensorBoard folder: losses, lr, gradient norm, iteration time (needs the "
                        "tensorboard package, extra hvpl[tb]; default: none)")
    p.set_defaults(func=cmd_train)


def _add_ogc_memory_parser(sub) -> None:
    p = sub.add_parser("ogc-memory", help="OGC basis for step T from the step T-1 model and data")
    _add_run_config_args(p)
    _add_compute_args(p)
    p.add_argument("--step", type=INDEX, required=True, help="step T >= 1 whose basis is built")
    p.add_argument("--seed", type=INDEX, default=0, help="seed of the frame sampling (default 0)")
    p.add_argument("--prev-model", required=True, help="step T-1 model_final.pth")
    p.add_argument("--train-json", required=True, help="step T-1 training JSON")
    p.add_argument("--prev-basis", default=None, help="step T-1 ogc_basis.pt, accumulated into the new one")
    p.add_argument("--out", required=True, help="ogc_basis.pt to write")
    p.set_defaults(func=cmd_ogc_memory)


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="a trained step over its test JSON -> YouTube-VIS results")
    _add_compute_args(p, workers=True)
    p.add_argument("--model", dest="model_path", required=True,
                   help="model_final.pth of a trained step T, or an authors' HVPL checkpoint (then --scenario, "
                        "--model-size, --set and --classes describe it)")
    p.add_argument("--test-json", required=True,
                   help="test JSON whose categories are the model's classes (test_step{T}.json of the split)")
    p.add_argument("--out", required=True, help="predictions JSON to write (YouTube-VIS results format)")
    p.add_argument("--max-videos", type=COUNT, default=None, help="predict only the first N videos (default: all)")
    p.add_argument("--image-root", default=None,
                   help="frame folder (default: the JSON's image_root entry, which the split writes)")
    _add_authors_args(p, "--model-size", required=False)
    p.add_argument("--authors-compat", action="store_true",
                   help="the authors' test-time video path (frame-0 slicing, per-frame joint tree scan) whatever "
                        "the model file's inference.authors_compat says (docs/model.md)")
    p.set_defaults(func=cmd_predict)


def _add_authors_args(p: argparse.ArgumentParser, model_flag: str, required: bool) -> None:
    """What an authors' checkpoint does not record: its scenario, model size (``model_flag``) and class order."""
    p.add_argument("--scenario", required=required, default=None,
                   help="the checkpoint's scenario (name in config/scenarios/ or a YAML path)")
    p.add_argument(model_flag, dest=model_flag[2:].replace("-", "_"), default=None,
                   help="model size in config/models/ (default: the scenario's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. model.frame_decoder.num_queries=50 (repeatable)")
    p.add_argument("--classes", default=None,
                   help="the split's classes.json: class order (default: the scenario's class_order, else "
                        "ascending category ids)")


def _add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="an authors' HVPL checkpoint (detectron2 model_final.pth) -> our "
                                       "model_final.pth of its step")
    p.add_argument("--in", dest="in_path", required=True, help="the authors' checkpoint (.pth or .pkl)")
    p.add_argument("--out", required=True, help="model_final.pth to write")
    p.add_argument("--step", type=int, default=None,
                   help="the step the file should be (checked; default: read from its class heads)")
    _add_authors_args(p, "--model", required=True)
    p.set_defaults(func=cmd_convert)


def _add_claim_gpus_parser(sub) -> None:
    p = sub.add_parser("claim-gpus", help="run COMMAND on N GPUs no other job of this machine holds (local "
                                          "GPU runs of the workflow; a no-op under SLURM)")
    p.add_argument("--count", type=INDEX, default=1, help="GPUs the command needs (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for free GPUs (default: no limit)")
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="run with CUDA_VISIBLE_DEVICES set to the claimed GPUs; the locks ($HVPL_GPU_LOCK_DIR) "
                        "are held until it ends")
    p.set_defaults(func=cmd_claim_gpus)


# One parser per subcommand, in the order of ``hvpl --help``.
SUBCOMMAND_PARSERS = (_add_synth_parser, _add_split_parser, _add_evaluate_parser, _add_forgetting_parser,
                      _add_summarize_parser, _add_visualize_parser, _add_params_parser, _add_train_parser,
                      _add_ogc_memory_parser, _add_predict_parser, _add_pack_parser, _add_convert_parser,
                      _add_claim_gpus_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvpl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMAND_PARSERS:
        add(sub)
    return parser


# Output arguments that name folders (per command); every other ``--out`` names a file.
OUTPUT_DIRS = {"synth": ("out",), "split": ("out",), "train": ("out_dir", "ckpt_dir"),
               "summarize": ("plots_dir", "tables_dir"), "visualize": ("out_dir",)}


def check_output_paths(args) -> None:
    """Before anything is written: an output folder must not be an existing file, an output file not an existing
    folder, and no parent of either an existing file."""
    dirs = OUTPUT_DIRS.get(args.command, ())
    names = set(dirs) | {"out", "matrix"}
    for name in sorted(names):
        value = getattr(args, name, None)
        if value is None:
            continue
        path = Path(value)
        if name in dirs and path.exists() and not path.is_dir():
            raise HVPLError(f"--{name.replace('_', '-')} {path}: exists and is not a folder")
        if name not in dirs and path.is_dir():
            raise HVPLError(f"--{name.replace('_', '-')} {path}: is a folder, expected a file name")
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise HVPLError(f"--{name.replace('_', '-')} {path}: {blocking} is a file, not a folder")


def _os_error(args, exc: OSError) -> HVPLError:
    """An OSError no library call turned into an HVPLError (e.g. creating an output folder on a read-only file
    system): one line naming the file, else the command's output."""
    from hvpl.utils.io import write_error

    outputs = [getattr(args, name, None) for name in ("out", "out_dir", "plots_dir")]
    where = exc.filename or next((o for o in outputs if o), args.command)
    return write_error(where, exc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            check_output_paths(args)
            args.func(args)
        except OSError as exc:
            raise _os_error(args, exc) from exc
    except HVPLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
