"""The `segkit` command: a thin face over the Python API. Nothing imports this module."""

import argparse
import os
import signal
import sys

from segkit.data import FORMATS as DATA_FORMATS
from segkit.errors import SegkitError

# The band's width lives in segkit.metrics (BOUNDARY_WIDTH), which imports Keras: the help names no number.
BOUNDARY_HELP = ("mIoU and pixel accuracy are also given over the boundary band alone: the labelled pixels within a "
                 "few pixels of a pixel of another labelled class (the 'trimap' band; see docs/losses-and-metrics.md)")
MAX_COLOR_DISTANCE_HELP = ("cityscapes-pairs: label pixels farther than this (RGB units) from every palette colour, the "
                           "JPEG-blurred edges, are ignored (default 30)")


def _data_prepare(args):
    from segkit import data

    manifest = data.prepare(args.format, args.src, args.out, size=args.size, classes=args.classes, split=args.split,
                            max_color_distance=args.max_color_distance)
    print(data.format_summary(manifest))
    print(f"prepared {manifest['num_items']} items -> {args.out}")


def _data_synth(args):
    from segkit import data

    paths = data.write_synthetic(args.out, count=args.count, seed=args.seed, size=tuple(args.size))
    print(f"wrote {len(paths)} synthetic pairs -> {args.out}")


def _data_download(args):
    from segkit import data

    path = data.download(args.name, args.out, url=args.url, sha256=args.sha256)
    print(f"downloaded {args.name} -> {path}")


def _quickstart(args):
    from segkit import quickstart

    quickstart.run(args.out, count=args.count, seed=args.seed, epochs=args.epochs, train=not args.no_train)


def _train(args):
    import segkit

    if (args.config is None) == (args.resume is None):
        raise SegkitError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if args.resume is not None and args.set:
        raise SegkitError("--set cannot change a run being resumed; it continues with its saved config.yaml")
    segkit.train(args.config, overrides=args.set, resume=args.resume, runs_dir=args.runs)


def _configs(args):
    from segkit.workflows import config

    names = config.shipped()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {config.describe(name)}")
    print(f"\ntrain one: segkit train NAME (a YAML path works too); they live in {config.SHIPPED}")


def _evaluate(args):
    import segkit

    segkit.evaluate(args.model_path, args.data, format=args.format, split=args.split, classes=args.classes, tta=args.tta,
                    json_path=args.json, batch_size=args.batch_size, input_size=args.input_size,
                    max_color_distance=args.max_color_distance)


def _predict(args):
    import segkit

    segkit.predict(args.model_path, args.inputs, out=args.out, input_size=args.input_size, tta=args.tta,
                   window=args.window, skip_bad=args.skip_bad, masks=args.masks, every=args.every)


def _compare(args):
    import segkit

    from segkit.workflows import compare

    result = segkit.compare(args.runs, out=args.out, latency=not args.no_latency, tta=args.tta, label_size=args.label_size,
                            names=args.names)
    print(compare.table_text(result["table"]))


def _export(args):
    import segkit

    segkit.export(args.model_path, format=args.format, out=args.out)


def _add_model_commands(sub):
    model_help = "a run folder (uses its best.keras) or a .keras model file"
    p = sub.add_parser("configs", help="list the configs segkit ships, one line each")
    p.set_defaults(run=_configs)

    p = sub.add_parser("train", help="train a model from a config into a new run folder (or resume one)")
    p.add_argument("config", nargs="?", help="a shipped config's name (segkit configs lists them), e.g. "
                   "unet-r34_synthetic_128x128, or a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (YAML value), e.g. --set train.epochs=3")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--runs", default="runs", help="folder that holds run folders (default: runs)")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="per-class IoU table and means of a model on a dataset",
                       description=f"Per-class IoU table, mIoU and pixel accuracy of a model on a dataset; {BOUNDARY_HELP}")
    p.add_argument("model_path", metavar="MODEL", help=model_help)
    p.add_argument("--data", required=True, help="a prepared dataset folder, or a raw one with --format")
    p.add_argument("--format", choices=DATA_FORMATS, help="format of a raw dataset (prepared into data/prepared once)")
    p.add_argument("--split", help="split of a raw layout (train, val, test)")
    p.add_argument("--classes", default="train", help="class mode of a raw dataset, as in `segkit data prepare`")
    p.add_argument("--max-color-distance", type=float, help=MAX_COLOR_DISTANCE_HELP)
    p.add_argument("--tta", choices=("flip",), help="average with the horizontally flipped prediction")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="feed the model the images resized to H x W (default: the size it was trained at) and score "
                   "at the labels' own size")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", help="colour masks and overlays for images of any size, overlay videos for videos")
    p.add_argument("model_path", metavar="MODEL", help=model_help)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_VIDEO", help="images, folders of images, or videos (.mp4, .avi, .mov)")
    p.add_argument("--out", required=True, help="folder for <name>_mask.png and <name>_overlay.png (videos: <name>_overlay.mp4)")
    p.add_argument("--masks", action="store_true", help="videos: also write each frame's class-index mask, <name>_frame000123.png")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos: keep one frame in N; the overlay video then plays at the source fps / N")
    p.add_argument("--tta", choices=("flip",))
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="resize each image (or frame) to H x W for the model; default: the size it was trained at")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                   help="instead predict each image at its own resolution in H x W tiles (a model trained on crops)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable images (each reported in one line) instead of stopping")
    p.set_defaults(run=_predict)

    p = sub.add_parser("compare", help="compare finished runs in one report (report.md + figures)",
                       description="Compare finished runs in one report (report.md + figures): a table of mIoU, pixel "
                       f"accuracy, params, GFLOPs and latency per run; {BOUNDARY_HELP}")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--no-latency", action="store_true", help="skip timing inference")
    p.add_argument("--tta", choices=("flip",),
                   help="score and time every run with the horizontally flipped prediction averaged in (two forward passes)")
    p.add_argument("--label-size", type=int, nargs=2, metavar=("H", "W"),
                   help="runs validated on the same items at different sizes: judge at this size's labels (default: the largest)")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="one name per RUN_DIR, in order, for the table's rows and the figures' legends (default: config names)")
    p.set_defaults(run=_compare)

    p = sub.add_parser("export", help="export a model and check the export's outputs match")
    p.add_argument("model_path", metavar="MODEL", help=model_help)
    p.add_argument("--format", required=True, choices=("savedmodel", "tflite", "onnx"))
    p.add_argument("--out", help="output path (default: export/ in the run folder, or next to the model file)")
    p.set_defaults(run=_export)


def _add_data_commands(sub):
    data = sub.add_parser("data", help="download, generate and prepare datasets").add_subparsers(dest="data_cmd", required=True)

    p = data.add_parser("prepare", help="decode a dataset once into a compact cache with manifest.json")
    p.add_argument("format", choices=DATA_FORMATS)
    p.add_argument("src", help="the dataset folder (layout depends on FORMAT)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize to H x W (masks: nearest neighbour)")
    p.add_argument("--classes", default="train", help="'train' (evaluated classes) or 'all' (every class present, renumbered from 0); folder format: a classes file")
    p.add_argument("--split", help="which split to read where the layout has several (train, val, test)")
    p.add_argument("--max-color-distance", type=float, help=MAX_COLOR_DISTANCE_HELP)
    p.set_defaults(run=_data_prepare)

    p = data.add_parser("synth", help="generate synthetic street scenes in the Cityscapes-pairs format")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="size of each half")
    p.set_defaults(run=_data_synth)

    p = data.add_parser("download", help="download a public dataset archive, check it and extract it safely")
    p.add_argument("name", choices=("cityscapes-pairs", "camvid"))
    p.add_argument("--out", required=True, help="parent folder: the dataset lands in OUT/NAME (e.g. --out data -> data/camvid)")
    p.add_argument("--url", help="override the archive URL (a mirror)")
    p.add_argument("--sha256", help="override the expected SHA-256 of the archive")
    p.set_defaults(run=_data_download)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_model_commands(sub)

    p = sub.add_parser("quickstart", help="the main job on the built-in synthetic city")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--count", type=int, default=160, help="synthetic pairs to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="epochs per model (default: the synthetic configs' value)")
    p.add_argument("--no-train", action="store_true", help="only generate, prepare and draw the data")
    p.set_defaults(run=_quickstart)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (how Colab, batch schedulers and preemptible machines stop a job), stopped like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM raises Terminated in the main thread, between steps: like Ctrl-C, a run keeps its last committed epoch
    # and a file being written is dropped whole.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args.run(args)
    except SegkitError as err:
        print(f"segkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"segkit: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        code = 128 + (signal.SIGTERM if terminated else signal.SIGINT)
        if argv is None:  # the segkit command itself (called from Python with arguments, it returns)
            _exit_now(code)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_now(code: int) -> None:
    """Ends the process without Python's shutdown, which can hang for ever after an interrupt: TensorFlow frees the
    training's data pipeline, cut off mid-batch, only then, and waits for its loader thread, which waits for the
    interpreter lock the shutdown holds. Everything to keep (state.json, checkpoints) is written and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
