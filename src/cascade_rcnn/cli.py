"""The ``cascade-rcnn`` command line: models, predict, train, evaluate, export, benchmark, shapes, demo."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .data.coco_root import coco_root_paths
from .data.images import ImageError
from .deploy.export import MissingPackageError
from .engine.schedule import SCHEDULES
from .engine.train import TrainingStopped
from .models.settings import SETTABLE, apply_settings, parse_settings
from .ops.compute_path import PRECISION_DTYPES
from .weights.checkpoint import CheckpointError
from .weights.zoo import (
    MODEL_ZOO,
    get_config,
    imagenet_url,
    published_url,
    reported_figure,
)


def cmd_models(args: argparse.Namespace) -> int:
    # "style" (pytorch / caffe: where a bottleneck strides) is a ResNet's; other backbones show "-".
    rows = [{"name": c.name, "backbone": c.backbone.label, "style": getattr(c.backbone, "style", "-"),
             "schedule": c.schedule, "box_ap": c.reported_box_ap, "mask_ap": c.reported_mask_ap,
             "mem_gb": c.reported_mem_gb, "fps": c.reported_fps, "url": c.url} for c in MODEL_ZOO.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    header = (f"{'name':<{width}} {'backbone':<11} {'style':<7} {'sched':<5} {'box AP':>6} {'mask AP':>7} "
              f"{'mem':>5} {'fps':>5}  url")
    print(header)
    for r in rows:
        cells = [reported_figure(r[k]) for k in ("box_ap", "mask_ap", "mem_gb", "fps")]
        print(f"{r['name']:<{width}} {r['backbone']:<11} {r['style']:<7} {r['schedule']:<5} {cells[0]:>6} "
              f"{cells[1]:>7} {cells[2]:>5} {cells[3]:>5}  {r['url'] or '(project config, no weights)'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import build_model
    from .engine import distributed
    from .engine.predict import predict_files

    check_device(args.device)
    options = predict_options(args)
    context = distributed.start(args.device)  # several ranks under torchrun: the images are sharded
    try:
        if args.onnx:
            if args.model or args.weights or args.set or args.exact or args.precision != "fp32":
                raise ValueError("--onnx takes the model and its settings from the file; "
                                 "drop --model/--weights/--set/--exact/--precision")
            if args.device != "cpu":
                raise ValueError("--onnx runs on onnxruntime's CPU provider; drop --device")
            from .deploy.onnx_runtime import OnnxDetector

            model = OnnxDetector(args.onnx)
        elif not args.model:
            raise ValueError("give --model NAME (and --weights), or --onnx FILE")
        else:
            settings = parse_settings(args.set)
            model = build_model(args.model, weights=model_weights(args, note=context.is_main),
                                device=context.device, exact=args.exact, settings=settings,
                                precision=args.precision)
        report = predict_files(model, args.inputs, args.out, score_thr=args.score_thr,
                               batch_size=args.batch_size, draw_pictures=not args.no_draw,
                               resume=args.resume, read_workers=args.read_workers, every=args.every,
                               context=context, predict_options=options)
    finally:
        distributed.stop(context)
    if context.is_main:
        def resumed(count: int) -> str:
            return f", {count} already done" if args.resume else ""

        counts = [f"{report.done} image(s) done{resumed(report.resumed)}"] if report.json_path else []
        if report.frames or report.frames_resumed or not report.json_path:  # some input was a video
            counts.append(f"{report.frames} video frame(s) done{resumed(report.frames_resumed)}")
        streams = f"{args.out}/predictions{'.rank*' if context.distributed else ''}.jsonl"
        print(f"{', '.join(counts)}, {len(report.failures)} failed; predictions: {report.json_path or streams}; "
              f"pictures: {args.out}/")
    return 1 if report.failures else 0


def predict_options(args: argparse.Namespace) -> dict:
    """``--tile``, ``--tile-overlap``, ``--tile-full-image``, ``--tta`` and ``--max-per-image`` as
    ``model.predict``'s keyword arguments, checked before any model is loaded."""
    from .inference.tiling import check_tiling
    from .inference.tta import TestTimeAugmentation

    options = {}
    if args.tile is not None:
        overlap = 0.2 if args.tile_overlap is None else args.tile_overlap
        check_tiling(args.tile, overlap)
        options.update(tile=args.tile, tile_overlap=overlap, tile_full_image=args.tile_full_image)
    elif args.tile_overlap is not None or args.tile_full_image:
        raise ValueError("--tile-overlap and --tile-full-image need --tile SIZE")
    if args.tta is not None:
        if args.tile is not None:
            raise ValueError("--tile and --tta cannot be combined (yet): choose one")
        options["tta"] = TestTimeAugmentation.parse(args.tta)
    if args.max_per_image is not None:
        if args.max_per_image < 1:
            raise ValueError(f"--max-per-image must be at least 1, got {args.max_per_image}")
        options["max_per_image"] = args.max_per_image
    if options and args.onnx:
        raise ValueError("--tile, --tta and --max-per-image run with --model (PyTorch), not with --onnx")
    return options


def model_weights(args: argparse.Namespace, note: bool = True) -> str | None:
    """``--weights`` as ``build_model`` takes it. A zoo name means its published checkpoint (from
    the cache, else downloaded); ``none`` means random weights, said on stderr; the project configs
    have no published file, so they need one or the other."""
    if args.weights == "none":
        if note:
            print(f"note: {args.model} has RANDOM weights (--weights none): its detections are meaningless",
                  file=sys.stderr)
        return None
    if args.weights is None:
        if get_config(args.model).url is None:
            raise ValueError(f"{args.model} has no published weights (a project config): give --weights PATH "
                             "(e.g. a training run's final.pth), or --weights none for random weights")
        return "zoo"
    return args.weights


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but PyTorch sees no CUDA device")


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import TrainConfig, train

    check_device(args.device)
    paths = coco_root_paths(args.coco_root, {"train_json": args.train_json, "train_images": args.train_images,
                                             "val_json": args.val_json, "val_images": args.val_images})
    if not (paths["train_json"] and paths["train_images"]):
        raise ValueError("give --train-json and --train-images, or --coco-root")
    model_config = apply_settings(get_config(args.model), parse_settings(args.set))
    config = TrainConfig(
        **paths, out_dir=args.out, backbone_weights=args.backbone_weights,
        weights=args.weights,
        schedule=args.schedule or model_config.schedule, epochs=args.epochs,
        lr_steps=tuple(args.lr_steps) if args.lr_steps else None, lr=args.lr,
        optimizer=args.optimizer, weight_decay=args.weight_decay, batch_size=args.batch_size,
        workers=args.workers, warmup_iters=args.warmup_iters,
        precision=args.precision, clip_grad=args.clip_grad, seed=args.seed, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, filter_empty_gt=not args.keep_empty,
        min_size=args.min_size, max_failed_fraction=args.max_failed_fraction, device=args.device,
        resume=args.resume)
    final = train(model_config, config)
    print(f"final weights: {final}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import (
        evaluate_coco,
        format_stage_table,
        format_table,
        write_metrics,
    )

    given = {"val_json": args.gt_json}
    if args.images or not args.predictions:  # scoring a predictions file needs no images
        given["val_images"] = args.images
    paths = coco_root_paths(args.coco_root, given, require_given=True)
    gt_json, images = paths["val_json"], paths.get("val_images")
    if not gt_json:
        raise ValueError("give --gt-json, or --coco-root")
    if args.predictions:
        if args.per_stage or args.set or args.precision != "fp32":
            raise ValueError("--per-stage, --set and --precision need a model (--model/--weights/--images), "
                             "not --predictions")
        metrics = evaluate_coco(gt_json, args.predictions)
        print(format_table(metrics))
    else:
        if not (args.model and images):
            raise ValueError("give --predictions P.json, or --model NAME --images DIR (and --weights)")
        from .api import build_model
        from .data.coco import CocoDataset
        from .engine.validate import evaluate_dataset

        check_device(args.device)
        settings = parse_settings(args.set)
        model = build_model(args.model, weights=model_weights(args), device=args.device, settings=settings,
                            precision=args.precision)
        dataset = CocoDataset(gt_json, images, class_names=list(model.class_names), with_masks=False)
        dataset.require_every_image()  # a left-out image's objects would count as misses
        metrics = evaluate_dataset(model, dataset, gt_json, per_stage=args.per_stage)
        print(format_stage_table(metrics) if args.per_stage else format_table(metrics))
    if args.out:
        write_metrics(args.out, metrics)
        print(f"metrics: {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .api import build_model
    from .deploy.export import export_onnx

    settings = parse_settings(args.set)
    model = build_model(args.model, weights=model_weights(args), settings=settings)
    path = export_onnx(model, args.out, opset=args.opset, score_thr=args.score_thr)
    print(f"exported {model.config.name} ({model.config.num_classes} classes) to {path}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .weights.download import cache_dir, ensure

    if not (args.names or args.all):
        raise ValueError("name the zoo models to fetch (see `cascade-rcnn models`), or --all")
    configs = list(MODEL_ZOO.values()) if args.all else [get_config(name) for name in args.names]
    urls = [published_url(config) for config in configs if config.url or not args.all]
    if args.imagenet:
        urls += [imagenet_url(c) for c in configs if imagenet_url(c)]
    urls, failed = list(dict.fromkeys(urls)), 0  # each file once, in order
    for url in urls:
        try:
            path, done = ensure(url)
            print(f"{path} ({done}, SHA-256 checked)")
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    print(f"{len(urls) - failed} file(s) in {cache_dir()}, {failed} failed; for a machine without network, "
          "copy that folder there and point CASCADE_RCNN_CACHE at it")
    return 1 if failed else 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmarking.benchmark import benchmark_text, run_benchmark

    check_device(args.device)
    for option in ("images", "iterations", "batch_size", "train_batch_size", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    result = run_benchmark(args.model, weights=args.weights, device=args.device, exact=args.exact,
                           image_dir=args.image_dir, num_images=args.images, size=_size(args.size),
                           batch_size=args.batch_size, precision=args.precision, threads=args.threads,
                           train=args.train,
                           train_batch_size=args.train_batch_size, iterations=args.iterations)
    print(json.dumps(result) if args.json else benchmark_text(result))
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH, e.g. 480x640, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"--size must be positive, got {text!r}")
    return height, width


def cmd_shapes(args: argparse.Namespace) -> int:
    from .data.shapes import generate_shapes

    path = generate_shapes(args.out_dir, num_images=args.num_images, size=args.size, seed=args.seed)
    print(f"shapes data set: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine.demo import DemoSettings, run_demo

    run_demo(Path(args.out), DemoSettings(precision=args.precision))
    return 0


WEIGHTS_HELP = ("checkpoint (.pth or .safetensors) path, URL, or Hugging Face Hub file; default for the zoo "
                "names: their published checkpoint (cache first, else downloaded); none = random weights")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cascade-rcnn", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the model zoo")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(run=cmd_models)

    predict = commands.add_parser("predict", help="detect objects in images, folders and videos")
    predict.add_argument("inputs", nargs="+", help="image files, folders (searched recursively for images) "
                         "and/or video files (.mp4, .avi, .mov, .mkv, ...: anything OpenCV decodes)")
    predict.add_argument("--model", choices=list(MODEL_ZOO), metavar="NAME",
                         help="a zoo name (see `cascade-rcnn models`)")
    predict.add_argument("--onnx", help="run an exported .onnx file with onnxruntime instead of --model")
    predict.add_argument("--weights", metavar="PATH|URL|hf://ORG/REPO[/FILE]|none", help=WEIGHTS_HELP)
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    predict.add_argument("--score-thr", type=float, default=0.3, help="keep detections scoring above this")
    predict.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    predict.add_argument("--batch-size", type=int, default=1)
    predict.add_argument("--no-draw", action="store_true",
                         help="write only predictions.json(l): no pictures, no annotated videos")
    predict.add_argument("--every", type=int, default=1, metavar="N",
                         help="videos: run the model on every Nth frame (default 1: every frame)")
    predict.add_argument("--exact", action="store_true",
                         help="MMDetection's ops bit for bit (slower); default: the fast path, equal up to float noise")
    add_precision_option(predict)
    predict.add_argument("--resume", action="store_true",
                         help="skip the images and video frames already in OUT/predictions*.jsonl and finish "
                         "the rest (annotated videos are rebuilt from the start)")
    predict.add_argument("--read-workers", type=int, metavar="N",
                         help="threads decoding images ahead of the model (default: 2 on a GPU, 0 on the CPU)")
    predict.add_argument("--tile", type=int, metavar="SIZE",
                         help="sliced inference: cut each image into overlapping SIZE x SIZE tiles at its own "
                         "resolution (each tile gets the model's resize), merge their detections")
    predict.add_argument("--tile-overlap", type=float, metavar="F",
                         help="fraction of a tile that neighbours share, in [0, 1) (default 0.2)")
    predict.add_argument("--tile-full-image", action="store_true",
                         help="with --tile: also one pass over the whole image, for objects larger than a tile")
    predict.add_argument("--tta", metavar="SPEC",
                         help="test-time augmentation, merged as MMDetection 3's DetTTAModel: 'flip', "
                         "'scales=0.75:1:1.25' (factors of the model's image scale) or 'flip,scales=...'")
    predict.add_argument("--max-per-image", type=int, metavar="N",
                         help="keep the best N detections per image (default 100; with --tile: per tile and "
                         "for the whole image)")
    add_set_option(predict)
    predict.set_defaults(run=cmd_predict)

    train = commands.add_parser("train", help="train or fine-tune on a COCO-format data set")
    train.add_argument("--model", required=True, choices=list(MODEL_ZOO), metavar="NAME")
    train.add_argument("--train-json", help="COCO annotation file (or --coco-root)")
    train.add_argument("--train-images", help="folder of its images (or --coco-root)")
    train.add_argument("--coco-root", metavar="DIR", help="COCO 2017: DIR/train2017, DIR/val2017, "
                       "DIR/annotations/instances_{train,val}2017.json (explicit paths win)")
    train.add_argument("--val-json")
    train.add_argument("--val-images")
    train.add_argument("--weights", help="initial weights (path, URL, hf://ORG/REPO[/FILE] or 'zoo'); another class count "
                       "than the data set's re-initialises the class layers")
    train.add_argument("--backbone-weights", metavar="imagenet|PATH|URL|none",
                       help="backbone initialisation when no --weights: default 'imagenet' for zoo models "
                       "(MMDetection's ImageNet file, downloaded once), nothing for project models")
    add_set_option(train)
    train.add_argument("--out", default="runs/train", help="checkpoints, metrics.jsonl, curves.png")
    train.add_argument("--schedule", choices=sorted(SCHEDULES),
                       help="default: the model's (1x; 20e for *_20e_*; 3x for *_mstrain_3x_*)")
    train.add_argument("--epochs", type=int, help="default: 12 (1x) or 20 (20e)")
    train.add_argument("--lr-steps", type=int, nargs="+", help="epochs after which lr x0.1")
    train.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                       help="sgd: MMDetection's recipe; adamw: faster from scratch")
    train.add_argument("--lr", type=float, help="default: 0.02 (sgd) or 2e-4 (adamw) x total batch / 16")
    train.add_argument("--weight-decay", type=float, help="default: 1e-4 (sgd) or 0.05 (adamw)")
    train.add_argument("--batch-size", type=int, default=2, help="images per process")
    train.add_argument("--workers", type=int, default=2, help="data loader processes")
    train.add_argument("--warmup-iters", type=int, default=500)
    add_precision_option(train)
    train.add_argument("--clip-grad", type=float, help="max gradient norm")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations (0: never)")
    train.add_argument("--checkpoint-every", type=int, default=0, help="iterations (0: each epoch)")
    train.add_argument("--keep-empty", action="store_true", help="train on images without annotations "
                       "as negatives (default: left out, MMDetection's filter_empty_gt)")
    train.add_argument("--min-size", type=int, default=32,
                       help="leave out images whose shorter side is below this (default 32, MMDetection's; 0: none)")
    train.add_argument("--max-failed-fraction", type=float, default=0.01, metavar="F",
                       help="stop when more than this fraction of an epoch's images fail to load (default 0.01)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/latest.pth")
    train.add_argument("--device", default="cpu")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="COCO box/mask AP and the AP50..AP90 table")
    evaluate.add_argument("--gt-json", help="COCO annotation file (or --coco-root)")
    evaluate.add_argument("--coco-root", metavar="DIR", help="COCO 2017: val2017/ and "
                          "annotations/instances_val2017.json")
    evaluate.add_argument("--predictions", help="a COCO results file to score")
    evaluate.add_argument("--model", choices=list(MODEL_ZOO), metavar="NAME")
    evaluate.add_argument("--weights", metavar="PATH|URL|hf://ORG/REPO[/FILE]|none", help=WEIGHTS_HELP)
    evaluate.add_argument("--images", help="the images of --gt-json")
    evaluate.add_argument("--per-stage", action="store_true", help="also stage 1, 2, 3 alone")
    evaluate.add_argument("--out", help="write the metrics as JSON")
    add_set_option(evaluate)
    evaluate.add_argument("--device", default="cpu")
    add_precision_option(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="write an ONNX file that onnxruntime (or predict --onnx) runs")
    export.add_argument("--model", required=True, choices=list(MODEL_ZOO), metavar="NAME")
    export.add_argument("--weights", metavar="PATH|URL|hf://ORG/REPO[/FILE]|none", help=WEIGHTS_HELP)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (16 or newer; default 17)")
    export.add_argument("--score-thr", type=float, help="lowest score the graph returns (default 0.05)")
    add_set_option(export)
    export.set_defaults(run=cmd_export)

    fetch = commands.add_parser("download", help="fetch zoo checkpoints into the cache ahead of time, hash-checked")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="zoo names (see `cascade-rcnn models`)")
    fetch.add_argument("--all", action="store_true", help=f"every published checkpoint ({sum(1 for c in MODEL_ZOO.values() if c.url)} files, "
                       "0.3 to 0.6 GB each)")
    fetch.add_argument("--imagenet", action="store_true",
                       help="also the ImageNet backbone files that training from scratch starts from")
    fetch.set_defaults(run=cmd_download)

    bench = commands.add_parser("benchmark", help="inference images/s, latency and memory (and --train)")
    bench.add_argument("--model", required=True, choices=list(MODEL_ZOO), metavar="NAME")
    bench.add_argument("--weights", help="checkpoint (default: random weights spread like trained ones)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    bench.add_argument("--image-dir", help="time on these images (default: drawn scenes)")
    bench.add_argument("--images", type=int, help="number of images (default 10 drawn scenes, or every "
                       "image of --image-dir)")
    bench.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the drawn scenes (before the "
                       "model's resize)")
    bench.add_argument("--batch-size", type=int, default=1)
    add_precision_option(bench)
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--exact", action="store_true", help="time MMDetection's bit-exact path")
    bench.add_argument("--train", action="store_true", help="also time training steps at the zoo's batch")
    bench.add_argument("--train-batch-size", type=int, default=2, help="images per step (zoo: 2 per GPU)")
    bench.add_argument("--iterations", type=int, default=3, help="timed training steps")
    bench.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bench.set_defaults(run=cmd_benchmark)

    shapes = commands.add_parser("shapes", help="generate the synthetic shapes data set")
    shapes.add_argument("out_dir")
    shapes.add_argument("--num-images", type=int, default=200)
    shapes.add_argument("--size", type=int, default=320)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.set_defaults(run=cmd_shapes)

    demo = commands.add_parser("demo", help="offline demo: shapes -> train -> evaluate -> pictures")
    demo.add_argument("--out", default="demo_output")
    add_precision_option(demo)
    demo.set_defaults(run=cmd_demo)
    return root


def add_precision_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--precision", choices=list(PRECISION_DTYPES), default="fp32",
                         help="dtype of the network's work: fp32 (default), bf16 (CPUs with bfloat16 "
                              "instructions, CUDA), fp16 (CUDA); see the README's 'Precision'")


def add_set_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--set", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                         help=f"change model settings ({', '.join(SETTABLE)}), e.g. --set num_stages=4 "
                         "stage_ious=0.5,0.6,0.7,0.8 image_scale=1024,640; our checkpoints restore theirs")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except TrainingStopped as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (CheckpointError, ImageError, MissingPackageError, KeyError, ValueError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
