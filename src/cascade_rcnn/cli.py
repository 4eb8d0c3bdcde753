"""The ``cascade-rcnn`` command line: ``models``, ``predict``, ``demo``."""
from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .data.images import ImageError
from .zoo import MODEL_ZOO

DEMO_MODEL = "cascade_mask_rcnn_r18w32_fpn_320"


def sample_image() -> Path:
    """The picture bundled with the package (generated shapes, 320x240)."""
    return Path(str(resources.files("cascade_rcnn") / "assets" / "sample.png"))


def cmd_models(args: argparse.Namespace) -> int:
    rows = [{"name": c.name, "backbone": f"{'X' if c.backbone.groups > 1 else 'R'}-{c.backbone.depth}",
             "style": c.backbone.style, "schedule": c.schedule, "box_ap": c.reported_box_ap,
             "mask_ap": c.reported_mask_ap, "mem_gb": c.reported_mem_gb, "fps": c.reported_fps,
             "url": c.url} for c in MODEL_ZOO.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = f"{'name':<40} {'backbone':<8} {'style':<7} {'sched':<5} {'box AP':>6} {'mask AP':>7} {'mem':>5} {'fps':>5}  url"
    print(header)
    for r in rows:
        cells = [_fmt(r[k]) for k in ("box_ap", "mask_ap", "mem_gb", "fps")]
        print(f"{r['name']:<40} {r['backbone']:<8} {r['style']:<7} {r['schedule']:<5} {cells[0]:>6} "
              f"{cells[1]:>7} {cells[2]:>5} {cells[3]:>5}  {r['url'] or '(project config, no weights)'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import build_model
    from .engine.predict import predict_files

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    if args.weights is None:
        print(f"note: {args.model} runs with RANDOM weights (no --weights given): "
              "the detections are meaningless", file=sys.stderr)
    model = build_model(args.model, weights=args.weights, device=args.device)
    report = predict_files(model, args.inputs, args.out, score_thr=args.score_thr,
                           batch_size=args.batch_size, draw_pictures=not args.no_draw)
    print(f"{report.done} image(s) done, {len(report.failures)} failed; "
          f"predictions: {report.json_path}; pictures: {args.out}/")
    return 1 if report.failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.inputs, args.model, args.weights = [str(sample_image())], DEMO_MODEL, None
    args.device, args.batch_size, args.no_draw = "cpu", 1, False
    torch.manual_seed(0)
    print("demo: predicting the bundled sample with a small, randomly initialised Cascade Mask R-CNN "
          "(no weights can be downloaded offline; training lands with the training issue)")
    return cmd_predict(args)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cascade-rcnn", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the model zoo")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(run=cmd_models)

    predict = commands.add_parser("predict", help="detect objects in images and folders")
    predict.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--model", required=True, choices=list(MODEL_ZOO), metavar="NAME",
                         help="a zoo name (see `cascade-rcnn models`)")
    predict.add_argument("--weights", help="checkpoint path or URL; 'zoo' = the published checkpoint")
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    predict.add_argument("--score-thr", type=float, default=0.3, help="keep detections scoring above this")
    predict.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    predict.add_argument("--batch-size", type=int, default=1)
    predict.add_argument("--no-draw", action="store_true", help="write only predictions.json")
    predict.set_defaults(run=cmd_predict)

    demo = commands.add_parser("demo", help="run the offline demo on the bundled sample")
    demo.add_argument("--out", default="demo_output")
    demo.add_argument("--score-thr", type=float, default=0.3)
    demo.set_defaults(run=cmd_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (CheckpointError, ImageError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
