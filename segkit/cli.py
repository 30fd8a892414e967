"""The `segkit` command: a thin face over the Python API. Nothing imports this module."""

import argparse
import sys

from segkit.errors import SegkitError

DATA_FORMATS = ("cityscapes-pairs", "cityscapes", "camvid", "camvid32", "folder")


def _data_prepare(args):
    from segkit import data

    manifest = data.prepare(args.format, args.src, args.out, size=args.size, classes=args.classes, split=args.split)
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

    quickstart.run(args.out, count=args.count, seed=args.seed)


def _add_data_commands(sub):
    data = sub.add_parser("data", help="download, generate and prepare datasets").add_subparsers(dest="data_cmd", required=True)

    p = data.add_parser("prepare", help="decode a dataset once into a compact cache with manifest.json")
    p.add_argument("format", choices=DATA_FORMATS)
    p.add_argument("src", help="the dataset folder (layout depends on FORMAT)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize to H x W (masks: nearest neighbour)")
    p.add_argument("--classes", default="train", help="'train' (evaluated classes) or 'all' (every class present, renumbered from 0); folder format: a classes file")
    p.add_argument("--split", help="which split to read where the layout has several (train, val, test)")
    p.set_defaults(run=_data_prepare)

    p = data.add_parser("synth", help="generate synthetic street scenes in the Cityscapes-pairs format")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="size of each half")
    p.set_defaults(run=_data_synth)

    p = data.add_parser("download", help="download a public dataset archive, check it and extract it safely")
    p.add_argument("name", choices=("cityscapes-pairs", "camvid"))
    p.add_argument("--out", required=True)
    p.add_argument("--url", help="override the archive URL (a mirror)")
    p.add_argument("--sha256", help="override the expected SHA-256 of the archive")
    p.set_defaults(run=_data_download)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)

    p = sub.add_parser("quickstart", help="the main job on the built-in synthetic city")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--count", type=int, default=240, help="synthetic pairs to generate")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_quickstart)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SegkitError as err:
        print(f"segkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
