"""The ``cascade-rcnn`` command line: models, predict, train, evaluate, export, convert, download, benchmark,
shapes, demo."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data.coco_root import coco_root_paths
from .deploy.export import MissingPackageError
from .engine.schedule import SCHEDULES
from .engine.scoring import PROTOCOLS
from .engine.train import TrainingStopped
from .errors import CascadeRCNNError, UserInputError, did_you_mean, user_input
from .models.settings import SETTABLE, apply_settings, parse_settings
from .ops.compute_path import PRECISION_DTYPES
from .outputs.overwrite_guard import refuse_existing, refuse_inputs_in, refuse_previous_run
from .weights.checkpoint import CheckpointError
from .weights.zoo import (
    DETECTRON2_CONFIGS,
    MODEL_ZOO,
    get_config,
    imagenet_url,
    published_url,
    reported_figure,
)

if TYPE_CHECKING:
    from .deploy.onnx_runtime import OnnxDetector
    from .inference.predictor import CascadeRCNN
    from .models.config import ModelConfig


def cmd_models(args: argparse.Namespace) -> int:
    # Columns every family fills: the backbone's label carries what sets it apart (R-50-caffe, Swin-T);
    # the neck is named by its spec's class (FPNConfig -> FPN).
    rows = [{"name": c.name, "from": c.framework, "backbone": c.backbone.label, "neck": type(c.neck).__name__.removesuffix("Config"),
             "schedule": c.schedule, "box_ap": c.reported_box_ap, "mask_ap": c.reported_mask_ap,
             "mem_gb": c.reported_mem_gb, "fps": c.reported_fps, "url": c.url} for c in MODEL_ZOO.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    name, source, backbone, neck = (max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "from", "backbone", "neck"))
    print(f"{'name':<{name}} {'from':<{source}} {'backbone':<{backbone}} {'neck':<{neck}} {'sched':<5} {'box AP':>6} "
          f"{'mask AP':>7} {'mem':>5} {'fps':>5}  url")
    for r in rows:
        cells = [reported_figure(r[k]) for k in ("box_ap", "mask_ap", "mem_gb", "fps")]
        print(f"{r['name']:<{name}} {r['from']:<{source}} {r['backbone']:<{backbone}} {r['neck']:<{neck}} {r['schedule']:<5} "
              f"{cells[0]:>6} {cells[1]:>7} {cells[2]:>5} {cells[3]:>5}  {r['url'] or '(project config, no weights)'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine import distributed
    from .engine.predict import STREAMS, predict_files

    check_device(args.device)
    options = predict_options(args)
    refuse_previous_run(args.out, [STREAMS], what="predict", resume_hint="--resume finishes it",
                        resume=args.resume, overwrite=args.overwrite)
    context = distributed.start(args.device)  # several ranks under torchrun: the images are sharded
    try:
        if args.onnx:
            model = onnx_model(args)
        elif not (args.model or args.config or args.weights):
            raise UserInputError("give --model NAME (and --weights), --config FILE.py --weights W, --weights of a "
                                 "checkpoint that carries its config, or --onnx FILE")
        else:
            model = load_model(args, context.device, note=context.is_main)
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
        pictures = "" if args.no_draw else f"; pictures: {args.out}/"
        print(f"{', '.join(counts)}, {len(report.failures)} failed; predictions: {report.json_path or streams}"
              f"{pictures}")
    return 1 if report.failures else 0


def predict_options(args: argparse.Namespace) -> dict:
    """``--tile``, ``--tile-overlap``, ``--tile-full-image``, ``--tta``, ``--max-per-image`` and
    ``--classes`` as ``model.predict``'s keyword arguments, checked before any model is loaded."""
    from .inference.tiling import check_tiling
    from .inference.tta import TestTimeAugmentation

    options = {}
    if args.tile is not None:
        overlap = 0.2 if args.tile_overlap is None else args.tile_overlap
        with user_input():
            check_tiling(args.tile, overlap)
        options.update(tile=args.tile, tile_overlap=overlap, tile_full_image=args.tile_full_image)
    elif args.tile_overlap is not None or args.tile_full_image:
        raise UserInputError("--tile-overlap and --tile-full-image need --tile SIZE")
    if args.tta is not None:
        if args.tile is not None:
            raise UserInputError("--tile and --tta cannot be combined (yet): choose one")
        with user_input():
            options["tta"] = TestTimeAugmentation.parse(args.tta)
    if args.max_per_image is not None:
        if args.max_per_image < 1:
            raise UserInputError(f"--max-per-image must be at least 1, got {args.max_per_image}")
        options["max_per_image"] = args.max_per_image
    if args.classes is not None:
        options["classes"] = [name.strip() for name in args.classes.split(",") if name.strip()]
    if options and args.onnx:
        raise UserInputError("--tile, --tta, --max-per-image and --classes run with --model (PyTorch), not with --onnx")
    return options


def onnx_model(args: argparse.Namespace) -> OnnxDetector:
    """``predict --onnx FILE``: the file holds the model, its classes and settings, so the options
    that choose those are refused, as is a score threshold below the one baked into the graph."""
    from .deploy.onnx_runtime import OnnxDetector

    model_options = [name for name, value in (
        ("--model", args.model), ("--config", args.config), ("--weights", args.weights),
        ("--class-names", args.class_names),
        ("--set", args.set), ("--exact", args.exact), ("--precision", args.precision != "fp32")) if value]
    if model_options:
        raise UserInputError(f"--onnx takes the model and its settings from the file; drop {'/'.join(model_options)}")
    if args.device != "cpu":
        raise UserInputError("--onnx runs on onnxruntime's CPU provider; drop --device")
    with user_input():  # the file the user named: unreadable, or not exported by us
        model = OnnxDetector(args.onnx)
    if args.score_thr < model.score_thr:
        raise UserInputError(f"{args.onnx} was exported with score_thr={model.score_thr}; it cannot return "
                             f"detections scoring {args.score_thr} or less (export again with --score-thr)")
    return model


def load_model(args: argparse.Namespace, device: str | torch.device, note: bool = True) -> CascadeRCNN:
    """The network that the model options name (``add_model_options`` and the options beside
    them), on ``device``. ``build_model`` refuses settings and precisions that do not fit as a
    ``UserInputError``; a checkpoint that does not, as a ``CheckpointError``."""
    from .api import build_model

    with user_input():
        settings = parse_settings(args.set)
    # export takes neither --exact nor --precision: its ONNX graph is the fast path's, in fp32.
    return build_model(model_source(args), weights=model_weights(args, note=note), device=device,
                       class_names=args.class_names, exact=getattr(args, "exact", False), settings=settings,
                       precision=getattr(args, "precision", "fp32"))


def model_source(args: argparse.Namespace) -> str | None:
    """What names the model: ``--config`` or ``--model``; None leaves it to the checkpoint
    ``--weights`` names (MMDetection's carry their config, ours their zoo name or converted config)."""
    source = getattr(args, "config", None) or args.model
    if source is None and args.model_required and args.weights in (None, "none", "zoo"):
        raise UserInputError("give --model NAME, --config FILE.py, or --weights of a checkpoint that carries its "
                             "config (MMDetection's, or ours)")
    return source


def model_weights(args: argparse.Namespace, default: str | None = "zoo", note: bool = True) -> str | None:
    """``--weights`` as ``build_model`` and the trainer take it: ``none`` is None (random weights,
    no checkpoint; said on stderr when ``note``), no ``--weights`` is ``default`` ("zoo": the
    zoo name's published checkpoint, from the cache, else downloaded; a ``--config`` has none).
    The project configs have no published file, so "zoo" is refused for them in one line."""
    named = args.model or getattr(args, "config", None) or "the model"
    if args.weights == "none":
        if note:
            print(f"note: {named} has RANDOM weights (--weights none): its detections are meaningless",
                  file=sys.stderr)
        return None
    weights = args.weights or default
    if weights == "zoo" and not args.model:
        raise UserInputError(f"{named} has no published weights: give --weights PATH (its trained checkpoint), "
                             "or --weights none for random weights")
    if weights == "zoo" and get_config(args.model).url is None:
        raise UserInputError(f"{args.model} has no published weights (a project config): give --weights PATH "
                             "(e.g. a training run's final.pth), or --weights none for random weights")
    return weights


def check_device(device: str) -> None:
    """``--device``: a device PyTorch knows, and CUDA only where it sees one."""
    try:
        torch.device(device)
    except RuntimeError:
        raise UserInputError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda asked for, but PyTorch sees no CUDA device")


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import RUN_FILES, TrainConfig, train

    check_device(args.device)
    refuse_previous_run(args.out, RUN_FILES, what="training", resume_hint="--resume continues it",
                        resume=args.resume, overwrite=args.overwrite)
    recipe = config_recipe(args)
    paths = coco_root_paths(args.coco_root, {"train_json": args.train_json, "train_images": args.train_images,
                                             "val_json": args.val_json, "val_images": args.val_images})
    paths = {name: path or recipe.pop(name, None) for name, path in paths.items()}
    if not (paths["train_json"] and paths["train_images"]):
        raise UserInputError("give --train-json and --train-images, --coco-root, or a --config that names them")
    model_config = training_model(args)
    given = {"schedule": args.schedule, "epochs": args.epochs, "lr_steps": tuple(args.lr_steps) if args.lr_steps
             else None, "lr": args.lr, "optimizer": args.optimizer, "weight_decay": args.weight_decay,
             "batch_size": args.batch_size, "warmup_iters": args.warmup_iters, "clip_grad": args.clip_grad,
             "min_size": args.min_size, "filter_empty_gt": False if args.keep_empty else None,
             "precision": args.precision, "checkpoint_every": args.checkpoint_every}
    options = {**recipe, **{name: value for name, value in given.items() if value is not None}}
    options.setdefault("schedule", model_config.schedule)
    config = TrainConfig(
        **paths, **options, out_dir=args.out, backbone_weights=args.backbone_weights,
        weights=model_weights(args, default=None, note=False),  # none: start as without --weights
        workers=args.workers, seed=args.seed, eval_every=args.eval_every,
        max_failed_fraction=args.max_failed_fraction, device=args.device, resume=args.resume)
    final = train(model_config, config)
    print(f"final weights: {final}")
    return 0


def training_model(args: argparse.Namespace) -> ModelConfig:
    """The model to train: ``--model``, ``--config``, or the one the ``--weights`` checkpoint
    carries, with ``--set`` applied."""
    from .api import model_from
    from .weights import checkpoint

    source = model_source(args)
    if source is not None:
        config = model_from(source)
    else:
        path = checkpoint.resolve(args.weights)
        config = checkpoint.model_of(checkpoint.read(path), path)
    with user_input():
        return apply_settings(config, parse_settings(args.set))


def config_recipe(args: argparse.Namespace) -> dict:
    """The training recipe a ``--config`` states (its data sets under ``--data-root`` if given), or
    a Detectron2 zoo row's (``--model``: the config file it is read from)."""
    if not args.config:
        if args.data_root:
            raise UserInputError("--data-root replaces a --config's data_root: give --config FILE.py")
        row_file = detectron2_row_file(args.model) if args.model else None
        return detectron2_recipe(row_file, args.device) if row_file else {}
    if is_detectron2_config(args.config):
        if args.data_root:
            raise UserInputError(f"--data-root: {args.config} names Detectron2's registered data sets, not files: "
                                 "give --train-json/--train-images")
        return detectron2_recipe(args.config, args.device)
    from .mmdet_config import read_config
    from .mmdet_config.recipe import training_recipe

    return training_recipe(read_config(args.config), args.config, args.data_root)


def detectron2_row_file(model: str) -> Path | None:
    """The Detectron2 config file a zoo row is read from (a ViTDet LazyConfig dump, or a yacs
    config of ``yacs_recipe.ZOO_SCHEDULES``), or None for another model."""
    from .detectron2_config.yacs_recipe import ZOO_SCHEDULES

    dump = DETECTRON2_CONFIGS / "ViTDet" / f"{model}.yaml"
    if dump.is_file():
        return dump
    return DETECTRON2_CONFIGS / f"{model}.yaml" if model in ZOO_SCHEDULES else None


def detectron2_recipe(path: str | Path, device: str) -> dict:
    """A Detectron2 config's recipe (a LazyConfig dump's: ``lazy_recipe.py``; a yacs config's:
    ``yacs_recipe.py``), its notes said on stderr."""
    from .detectron2_config import lazy_recipe, yacs_recipe
    from .detectron2_config.lazy_file import is_lazy_dump

    reader = lazy_recipe if is_lazy_dump(path) else yacs_recipe
    recipe, notes = reader.training_recipe(path, device)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    return recipe


def is_detectron2_config(path: str) -> bool:
    """A Detectron2 yacs file (``config.yaml``), not an MMDetection ``.py``."""
    return str(path).endswith((".yaml", ".yml"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import format_stage_table, format_table, write_metrics
    from .engine.scoring import evaluate_predictions

    given = {"val_json": args.gt_json}
    if args.images or not args.predictions:  # scoring a predictions file needs no images
        given["val_images"] = args.images
    paths = coco_root_paths(args.coco_root, given, require_given=True)
    gt_json, images = paths["val_json"], paths.get("val_images")
    if args.data_root and not args.config:
        raise UserInputError("--data-root replaces a --config's data_root: give --config FILE.py")
    if not gt_json and args.config and not is_detectron2_config(args.config):  # the config's own validation set
        from .mmdet_config import read_config
        from .mmdet_config.recipe import data_files

        found = data_files(read_config(args.config), "val", args.config, args.data_root)
        gt_json, images = found if found else (None, images)
        images = args.images or images
    if not gt_json:
        raise UserInputError("give --gt-json, or --coco-root")
    if args.out:
        refuse_inputs_in(args.out, [("--gt-json", gt_json), ("--images", images), ("--predictions", args.predictions),
                                    ("--weights", args.weights), ("--config", args.config)], "--out")
    if args.predictions:
        model_options = [name for name, value in (
            ("--per-stage", args.per_stage), ("--class-names", args.class_names), ("--set", args.set),
            ("--exact", args.exact), ("--precision", args.precision != "fp32")) if value]
        if model_options:
            raise UserInputError(f"{', '.join(model_options)} need a model (--model/--weights/--images), "
                                 "not --predictions")
        metrics = evaluate_predictions(gt_json, args.predictions, args.protocol)
        print(format_table(metrics))
    else:
        if not images or not (args.model or args.config or args.weights):
            raise UserInputError("give --predictions P.json, or --images DIR with --model NAME, --config FILE.py "
                                 "or --weights")
        from .data.coco import CocoDataset
        from .data.coco_checks import ClassNamesError
        from .engine.validate import evaluate_dataset

        check_device(args.device)
        model = load_model(args, args.device)
        try:
            dataset = CocoDataset(gt_json, images, class_names=list(model.class_names), with_masks=False)
        except ClassNamesError as error:
            raise UserInputError(f"{error}. To evaluate a model trained on these classes, give its checkpoint "
                                 "(--weights) and, if it carries no class names, --class-names NAME,NAME,... "
                                 "(in the order of its class layers)") from None
        dataset.require_every_image()  # a left-out image's objects would count as misses
        metrics = evaluate_dataset(model, dataset, gt_json, per_stage=args.per_stage, protocol=args.protocol)
        print(format_stage_table(metrics) if args.per_stage else format_table(metrics))
    if args.out:
        write_metrics(args.out, metrics)
        print(f"metrics: {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import MIN_OPSET, export_onnx

    if args.opset < MIN_OPSET:
        raise UserInputError(f"--opset {args.opset} cannot express RoIAlign with aligned=True; "
                             f"use {MIN_OPSET} or newer")
    refuse_inputs_in(args.out, [("--weights", args.weights), ("--config", args.config)], "--out")
    model = load_model(args, "cpu")
    path = export_onnx(model, args.out, opset=args.opset, score_thr=args.score_thr)
    print(f"exported {model.config.name} ({model.config.num_classes} classes) to {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights import checkpoint

    if args.source in ("none", "zoo"):
        raise UserInputError(f"convert needs a checkpoint file or URL, not {args.source!r}")
    refuse_inputs_in(args.out, [("CHECKPOINT", args.source), ("--config", args.config)], "OUT")
    args.weights = args.source
    model = load_model(args, "cpu")
    checkpoint.save(args.out, model)
    print(f"wrote {args.out}: {model.config.name}, {model.config.num_classes} classes "
          f"({', '.join(model.class_names[:5])}{', ...' if model.config.num_classes > 5 else ''}), "
          "config and settings inside")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .weights.download import cache_dir, ensure, named_hash

    if not (args.names or args.all):
        raise UserInputError("name the zoo models to fetch (see `cascade-rcnn models`), or --all")
    with user_input():  # an unknown name, or a project config (no published file)
        configs = list(MODEL_ZOO.values()) if args.all else [get_config(name) for name in args.names]
        urls = [published_url(config) for config in configs if config.url or not args.all]
    if args.imagenet:
        urls += [imagenet_url(c) for c in configs if imagenet_url(c)]
    urls, failed = list(dict.fromkeys(urls)), 0  # each file once, in order
    for url in urls:
        try:
            path, done = ensure(url)
            named = named_hash(path.name)
            print(f"{path} ({done}, {f'{named[1]} checked' if named else 'no hash in its name to check'})")
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
            raise UserInputError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    # --model, --config (MMDetection's .py or Detectron2's .yaml, as build_model reads them) or a
    # checkpoint that carries its config. No --weights and --weights none alike: random weights,
    # spread like trained ones (it says so).
    result = run_benchmark(model_source(args), weights=model_weights(args, default=None, note=False),
                           device=args.device, exact=args.exact, image_dir=args.image_dir, num_images=args.images,
                           size=_size(args.size), batch_size=args.batch_size, precision=args.precision,
                           threads=args.threads, train=args.train, train_batch_size=args.train_batch_size,
                           iterations=args.iterations)
    print(json.dumps(result) if args.json else benchmark_text(result))
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserInputError(f"--size must be HEIGHTxWIDTH, e.g. 480x640, got {text!r}") from None
    if height < 1 or width < 1:
        raise UserInputError(f"--size must be positive, got {text!r}")
    return height, width


def cmd_shapes(args: argparse.Namespace) -> int:
    from .data.shapes import generate_shapes, shapes_files

    refuse_existing(shapes_files(args.out_dir), "shapes would write a data set over it; give a new or empty folder")
    path = generate_shapes(args.out_dir, num_images=args.num_images, size=args.size, seed=args.seed)
    print(f"shapes data set: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine.demo import DemoSettings, run_demo

    settings = DemoSettings.from_scratch if args.from_scratch else DemoSettings
    run_demo(Path(args.out), settings(precision=args.precision))
    return 0


# --- the parser: shared option groups, then one function per command -----------------------------

DEBUG_VARIABLE = "CASCADE_RCNN_DEBUG"
DEBUG_HELP = (f"on an error, show Python's full traceback instead of the one-line message (also: "
              f"{DEBUG_VARIABLE}=1); errors that are not the input's fault always show it")
WEIGHTS_HELP = ("the checkpoint: a .pth or .safetensors path, a URL, hf://ORG/REPO[@REVISION][/FILE] (Hugging "
                "Face Hub), 'zoo' (the zoo name's published checkpoint: cache first, else downloaded, "
                "hash-checked) or 'none' (random weights: no checkpoint is read)")


class CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: an argument it does not know is its own usage error, naming the
    closest options (the top-level parser would show its own usage and no hint)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = [option for action in self._actions for option in action.option_strings]
            hints = "".join(did_you_mean(extra.split("=")[0], options) for extra in extras if extra.startswith("--"))
            self.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return namespace, extras


def zoo_name(text: str) -> str:
    """``--model NAME``: a zoo name; otherwise a usage error naming the closest ones."""
    try:
        get_config(text)
    except KeyError as error:
        raise argparse.ArgumentTypeError(error.args[0]) from None
    return text


def add_command(commands: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
                summary: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``run(args)``; ``--debug`` is taken after its name too."""
    command = commands.add_parser(name, help=summary)
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    command.set_defaults(run=run)
    return command


def add_model_options(command: argparse.ArgumentParser, *, required: bool, default: str
                      ) -> argparse._ArgumentGroup:
    """``--model`` or ``--config``, and ``--weights`` (``default``: what no ``--weights`` means for
    this command), in a "model" group that the caller adds its other model options to. With
    ``required`` one of ``--model``, ``--config`` or a ``--weights`` that carries its config is
    needed (``model_source``)."""
    command.set_defaults(model_required=required)
    group = command.add_argument_group("model")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--model", type=zoo_name, metavar="NAME", help="a zoo name (see `cascade-rcnn models`)")
    source.add_argument("--config", metavar="FILE.py|config.yaml",
                        help="an MMDetection config file (a work dir's merged dump, or one with _base_ files beside "
                        "it) or a Detectron2 config.yaml (a run's dump, or one with _BASE_ files), read as data, never "
                        "run; not needed with an MMDetection checkpoint, which carries it, nor with a Detectron2 "
                        "run's model_final.pth, whose config.yaml lies beside it")
    group.add_argument("--weights", metavar="PATH|URL|hf://ORG/REPO[/FILE]|zoo|none",
                       help=f"{WEIGHTS_HELP}; default: {default}")
    return group


def add_set_option(group: argparse._ActionsContainer) -> None:
    group.add_argument("--set", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                       help=f"change model settings ({', '.join(SETTABLE)}), e.g. --set num_stages=4 "
                       "stage_ious=0.5,0.6,0.7,0.8 image_scale=1024,640; our checkpoints restore theirs")


def add_class_names_option(group: argparse._ActionsContainer) -> None:
    group.add_argument("--class-names", type=class_names_list, metavar="NAME,NAME,...",
                       help="the classes, in the order of the class layers, for a checkpoint that carries no "
                       "names (MMDetection's, trained on your data); with one of ours it renames them")


def class_names_list(text: str) -> list[str]:
    """``--class-names a,b,c`` as ``["a", "b", "c"]``; empty or repeated names are refused."""
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names separated by commas, got {text!r}")
    return names


def add_compute_options(command: argparse.ArgumentParser, *, exact: bool = True) -> None:
    """Where and how the network runs: ``--device``, ``--precision`` and (``exact``) ``--exact``."""
    group = command.add_argument_group("compute")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    add_precision_option(group)
    if exact:
        group.add_argument("--exact", action="store_true", help="MMDetection's ops bit for bit (slower); "
                           "default: the fast path, equal up to float noise")


def add_precision_option(group: argparse._ActionsContainer) -> None:
    group.add_argument("--precision", choices=list(PRECISION_DTYPES), default="fp32",
                       help="dtype of the network's work: fp32 (default), bf16 (CPUs with bfloat16 "
                       "instructions, CUDA), fp16 (CUDA); see the README's 'Precision'")


def add_score_option(command: argparse._ActionsContainer, default: float | None, meaning: str) -> None:
    command.add_argument("--score-thr", type=float, default=default, metavar="S",
                         help=f"drop detections scoring below S ({meaning})")


def add_data_root_option(command: argparse._ActionsContainer) -> None:
    command.add_argument("--data-root", metavar="DIR", help="with --config: where its data sets' ann_file and "
                         "data_prefix are, instead of its data_root")


def add_coco_root_option(command: argparse._ActionsContainer) -> None:
    command.add_argument("--coco-root", metavar="DIR", help="COCO 2017: DIR/train2017, DIR/val2017, "
                         "DIR/annotations/instances_{train,val}2017.json (explicit paths win)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cascade-rcnn", description=__doc__)
    root.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = root.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    models = add_command(commands, "models", cmd_models, "list the model zoo")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    for add in (add_predict, add_train, add_evaluate, add_export, add_convert, add_download, add_benchmark,
                add_shapes, add_demo):
        add(commands)
    return root


def add_predict(commands: argparse._SubParsersAction) -> None:
    predict = add_command(commands, "predict", cmd_predict, "detect objects in images, folders and videos")
    predict.add_argument("inputs", nargs="+", help="image files, folders (searched recursively for images) "
                         "and/or video files (.mp4, .avi, .mov, .mkv, ...: anything OpenCV decodes)")
    model = add_model_options(predict, required=False, default="zoo (project configs: give one)")
    add_class_names_option(model)
    add_set_option(model)
    model.add_argument("--onnx", metavar="FILE",
                       help="run an exported .onnx file with onnxruntime instead of --model")
    add_compute_options(predict)
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    add_score_option(predict, 0.3, "default 0.3")
    predict.add_argument("--max-per-image", type=int, metavar="N",
                         help="keep the best N detections per image (default 100; with --tile: per tile and "
                         "for the whole image)")
    predict.add_argument("--classes", metavar="NAME,NAME,...",
                         help="keep only these classes' detections (e.g. person), chosen before --max-per-image")
    predict.add_argument("--batch-size", type=int, default=1)
    predict.add_argument("--no-draw", action="store_true",
                         help="write only predictions.json(l): no pictures, no annotated videos")
    predict.add_argument("--every", type=int, default=1, metavar="N",
                         help="videos: run the model on every Nth frame (default 1: every frame)")
    predict.add_argument("--resume", action="store_true",
                         help="skip the images and video frames already in OUT/predictions*.jsonl and finish "
                         "the rest (annotated videos are rebuilt from the start)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace the previous run in OUT (without it, or --resume, such an OUT is refused)")
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


def add_train(commands: argparse._SubParsersAction) -> None:
    train = add_command(commands, "train", cmd_train, "train or fine-tune on a COCO-format data set")
    model = add_model_options(train, required=True, default="none: the backbone starts from --backbone-weights; "
                              "another class count than the data set's re-initialises the class layers")
    model.add_argument("--backbone-weights", metavar="imagenet|PATH|URL|none",
                       help="backbone initialisation when no --weights: default 'imagenet' for zoo models "
                       "(MMDetection's ImageNet file, downloaded once), nothing for project models")
    add_set_option(model)
    add_compute_options(train, exact=False)
    train.set_defaults(precision=None)  # fp32, or what a --config's recipe says (Detectron2's AMP)
    data = train.add_argument_group("data")
    add_data_root_option(data)
    data.add_argument("--train-json", help="COCO annotation file (or --coco-root)")
    data.add_argument("--train-images", help="folder of its images (or --coco-root)")
    add_coco_root_option(data)
    data.add_argument("--val-json")
    data.add_argument("--val-images")
    data.add_argument("--keep-empty", action="store_true", help="train on images without annotations "
                      "as negatives (default: left out, MMDetection's filter_empty_gt)")
    data.add_argument("--min-size", type=int,
                      help="leave out images whose shorter side is below this (default 32, MMDetection's; 0: none)")
    data.add_argument("--max-failed-fraction", type=float, default=0.01, metavar="F",
                      help="stop when more than this fraction of an epoch's images fail to load (default 0.01)")
    data.add_argument("--workers", type=int, default=2, help="data loader processes")
    train.add_argument("--out", default="runs/train", help="checkpoints, metrics.jsonl, curves.png")
    train.add_argument("--schedule", choices=sorted(SCHEDULES),
                       help="default: the model's (1x; 20e for *_20e_*; 3x for *_mstrain_3x_*)")
    train.add_argument("--epochs", type=int, help="default: 12 (1x), 20 (20e) or 36 (3x)")
    train.add_argument("--lr-steps", type=int, nargs="+", help="epochs after which lr x0.1")
    train.add_argument("--optimizer", choices=["sgd", "adamw"],
                       help="sgd (default): MMDetection's recipe; adamw: faster from scratch")
    train.add_argument("--lr", type=float, help="default: 0.02 (sgd) or 2e-4 (adamw) x total batch / 16")
    train.add_argument("--weight-decay", type=float, help="default: 1e-4 (sgd) or 0.05 (adamw)")
    train.add_argument("--batch-size", type=int, help="images per process (default 2)")
    train.add_argument("--warmup-iters", type=int, help="default 500")
    train.add_argument("--clip-grad", type=float, help="max gradient norm")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations (0: never)")
    train.add_argument("--checkpoint-every", type=int,
                       help="iterations (default 0: each epoch; a Detectron2 config's SOLVER.CHECKPOINT_PERIOD)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/latest.pth")
    train.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run: its "
                       "checkpoints and metrics.jsonl are replaced (without it, or --resume, such an OUT is refused)")


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = add_command(commands, "evaluate", cmd_evaluate,
                           "COCO (or LVIS federated) box/mask AP and the AP50..AP90 table")
    evaluate.add_argument("--gt-json", help="COCO or LVIS annotation file (or --coco-root)")
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                          help="lvis: LVIS's federated AP (APr/APc/APf, 300 detections per image); "
                               "auto (default): lvis when the file has LVIS's fields, else coco")
    add_coco_root_option(evaluate)
    add_data_root_option(evaluate)
    evaluate.add_argument("--predictions", help="a COCO results file to score")
    evaluate.add_argument("--images", help="the images of --gt-json")
    model = add_model_options(evaluate, required=False, default="zoo (project configs: give one)")
    add_class_names_option(model)
    add_set_option(model)
    add_compute_options(evaluate)
    evaluate.add_argument("--per-stage", action="store_true", help="also stage 1, 2, 3 alone")
    evaluate.add_argument("--out", help="write the metrics as JSON")


def add_export(commands: argparse._SubParsersAction) -> None:
    export = add_command(commands, "export", cmd_export,
                         "write an ONNX file that onnxruntime (or predict --onnx) runs")
    model = add_model_options(export, required=True, default="zoo (project configs: give one)")
    add_class_names_option(model)
    add_set_option(model)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (16 or newer; default 17)")
    add_score_option(export, None, "default: the model's, 0.05; baked into the graph: predict --onnx can "
                     "raise it, not lower it")


def add_convert(commands: argparse._SubParsersAction) -> None:
    convert = add_command(commands, "convert", cmd_convert,
                          "write a checkpoint (an MMDetection work dir's epoch_N.pth) as ours: config, classes "
                          "and settings inside (.pth, or .safetensors for the Hub)")
    convert.add_argument("source", metavar="CHECKPOINT", help="the checkpoint to convert (path, URL or hf://)")
    convert.add_argument("out", help="the file to write: .pth or .safetensors")
    model = convert.add_argument_group("model")
    model.add_argument("--model", type=zoo_name, metavar="NAME", help="for a checkpoint without a config")
    model.add_argument("--config", metavar="FILE.py|config.yaml",
                       help="for a checkpoint without a config: its config file (MMDetection's or Detectron2's)")
    add_class_names_option(model)
    convert.set_defaults(model_required=False, weights=None, set=[], exact=False, precision="fp32")


def add_download(commands: argparse._SubParsersAction) -> None:
    fetch = add_command(commands, "download", cmd_download,
                        "fetch zoo checkpoints into the cache ahead of time, hash-checked")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="zoo names (see `cascade-rcnn models`)")
    published = sum(1 for c in MODEL_ZOO.values() if c.url)
    fetch.add_argument("--all", action="store_true",
                       help=f"every published checkpoint ({published} files, 0.3 to 0.6 GB each)")
    fetch.add_argument("--imagenet", action="store_true",
                       help="also the ImageNet backbone files that training from scratch starts from")


def add_benchmark(commands: argparse._SubParsersAction) -> None:
    bench = add_command(commands, "benchmark", cmd_benchmark, "inference images/s, latency and memory (and --train)")
    add_model_options(bench, required=True, default="none, random weights rescaled so that detections spread "
                      "like a trained model's")
    add_compute_options(bench)
    bench.add_argument("--image-dir", help="time on these images (default: drawn scenes)")
    bench.add_argument("--images", type=int, help="number of images (default 10 drawn scenes, or every "
                       "image of --image-dir)")
    bench.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the drawn scenes (before the "
                       "model's resize)")
    bench.add_argument("--batch-size", type=int, default=1)
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--train", action="store_true", help="also time training steps at the zoo's batch")
    bench.add_argument("--train-batch-size", type=int, default=2, help="images per step (zoo: 2 per GPU)")
    bench.add_argument("--iterations", type=int, default=3, help="timed training steps")
    bench.add_argument("--json", action="store_true", help="one JSON object on stdout")


def add_shapes(commands: argparse._SubParsersAction) -> None:
    shapes = add_command(commands, "shapes", cmd_shapes, "generate the synthetic shapes data set")
    shapes.add_argument("out_dir", help="writes OUT_DIR/annotations.json (COCO) and OUT_DIR/images/")
    shapes.add_argument("--num-images", type=int, default=200, help="how many images (default 200)")
    shapes.add_argument("--size", type=int, default=320, help="image side in pixels, at least 64 (default 320)")
    shapes.add_argument("--seed", type=int, default=0,
                        help="default 0; another seed gives other images (e.g. a validation split)")


def add_demo(commands: argparse._SubParsersAction) -> None:
    demo = add_command(commands, "demo", cmd_demo, "offline demo: shapes -> train -> evaluate -> pictures")
    demo.add_argument("--out", default="demo_output")
    demo.add_argument("--from-scratch", action="store_true",
                      help="train every layer from random weights: 1000 steps (about 3x the time) instead of "
                           "352 from the shipped trunk (backbone, FPN, RPN trained on other generated images)")
    add_precision_option(demo)


# Errors that are the user's to fix: one line on stderr, status 2 (3: a training run stopped on
# purpose). CheckpointError (weights/) and MissingPackageError (deploy/) predate CascadeRCNNError;
# OSError is a file the user named that is missing or unwritable. Any other exception is a bug:
# its traceback is shown.
USER_ERRORS = (CascadeRCNNError, CheckpointError, MissingPackageError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader gone (a closed pipe) shows here, not as Python's complaint at exit
        return status
    except BrokenPipeError:  # stdout closed early (`cascade-rcnn models | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's final flush fails silently
        return 128 + signal.SIGPIPE
    except USER_ERRORS as error:
        if args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, TrainingStopped) else 2
