"""Finished Cityscapes-pairs runs scored on their own held-out items, the labels decoded at another colour distance.

A judge that labels each pixel with the nearest palette colour within 50 also scores the JPEG-blurred label edges
that segkit's default tolerance of 30 leaves out. This re-prepares each run's validation source at
--max-color-distance (once, into --cache), checks it holds the same items, and scores the run's best.keras on the
items it was validated on: mIoU, pixel accuracy, classes at zero, and the boundary band (segkit.evaluate's numbers).
Run from the repository root:
    python benchmarks/heldout_at_color_distance.py RUN_DIR [RUN_DIR ...] --max-color-distance 50 [--tta flip]
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from segkit.errors import SegkitError  # noqa: E402
from segkit.workflows import compare, datasets, evaluate, run_report, runs  # noqa: E402
from segkit.workflows.loading import load_model  # noqa: E402


def held_out_split(run: runs.Run, distance: float, cache: str) -> datasets.Split:
    """The run's validation items, their labels decoded again at `distance`."""
    recorded = run_report.validation_split(run)
    manifest = recorded.dataset.manifest
    dataset, path = datasets.open_dataset(manifest["source"], format=manifest["format"], split=manifest["split"],
                                          size=manifest["image_size"], max_color_distance=distance, cache=cache)
    if list(dataset.manifest["items"]) != list(manifest["items"]) or dataset.classes != recorded.dataset.classes:
        raise SegkitError(f"{path} does not hold the items and classes of {recorded.path}")
    return datasets.Split(dataset, recorded.indices, path)


def score(run_dir, distance: float, cache: str, tta=None) -> dict:
    run = runs.Run.open(run_dir)
    split = held_out_split(run, distance, cache)
    net, _ = load_model(run.path)
    cm, boundary_cm = evaluate.confusion(net, split.dataset.images, split.dataset.masks, split.indices,
                                         num_classes=len(split.dataset.classes), tta=tta)
    result = evaluate.summarize(cm, boundary_cm, split.dataset.classes)
    result["labelled share"] = cm.sum() / (len(split) * split.image_size[0] * split.image_size[1])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders trained on Cityscapes pairs")
    parser.add_argument("--max-color-distance", type=float, required=True, help="the labels' colour tolerance (segkit's default: 30)")
    parser.add_argument("--tta", choices=("flip",), help="average each image's prediction with its mirror's")
    parser.add_argument("--cache", default="data/prepared", help="where the re-decoded sources are prepared")
    args = parser.parse_args(argv)
    print(f"held-out items, labels within {args.max_color_distance:g} of a palette colour, test-time augmentation: "
          f"{args.tta or 'none'}\n")
    print("| run | labelled pixels | held-out mIoU | pixel accuracy | classes at zero IoU | boundary acc | boundary mIoU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run_dir in args.runs:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # preparation progress
                r = score(run_dir, args.max_color_distance, args.cache, args.tta)
        except SegkitError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"| {Path(run_dir).name} | {r['labelled share']:.1%} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} | "
              f"{compare.classes_at_zero(r['per_class_iou'])} | {r['boundary_pixel_accuracy']:.4f} | {r['boundary_miou']:.4f} |")
    print(f"\nrerun: python benchmarks/heldout_at_color_distance.py RUN_DIR... --max-color-distance "
          f"{args.max_color_distance:g}{' --tta ' + args.tta if args.tta else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
