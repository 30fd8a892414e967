"""The ablation table of benchmarks/accuracy_cpu.sh, from finished run folders, through segkit.compare.

One markdown row per run: config name, training minutes, epochs (fractional: a time budget ends one part-way),
held-out mIoU and classes at zero IoU, boundary-band pixel accuracy and mIoU (the labelled pixels within
segkit.metrics.BOUNDARY_WIDTH pixels of another class), params and GFLOPs per image at the size the model is fed;
--tta flip scores every run on each image and its mirror. compare judges
every run on the same held-out items at the largest prepared size's labels (--label-size H W: at that size's),
each model fed at the size it was trained at, so a run trained at 192x192 is scored on the same 256x256 labels as
the rest; its report (per-class IoU, learning curves, a qualitative grid, confusion matrices) goes to --out.
Run from the repository root:  python benchmarks/accuracy_table.py RUN_DIR [RUN_DIR ...] [--out DIR] [--cores both|split]
                               [--tta flip] [--label-size H W]
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import segkit  # noqa: E402
from segkit.errors import SegkitError  # noqa: E402
from segkit.workflows.compare import BOUNDARY_ACCURACY, BOUNDARY_MIOU  # noqa: E402
from segkit.workflows.runs import METRICS  # noqa: E402

COLUMNS = ("config", "minutes", "epochs", "held-out mIoU", "classes at zero IoU", BOUNDARY_ACCURACY, BOUNDARY_MIOU,
           "params (M)", "GFLOPs")


def rows(folders, out, tta=None, label_size=None) -> list[dict]:
    """One table row per run folder, from segkit.compare's table (its progress goes to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):
        result = segkit.compare(folders, out=out, latency=False, tta=tta, label_size=label_size)
    return [{
        "config": name,
        "minutes": f"{run['training (min)']:.1f}",
        "epochs": f"{run['epochs']:.2f}",
        "held-out mIoU": f"{run['mIoU']:.4f}",
        "classes at zero IoU": str(run["classes at zero"]),  # IoU under compare.ZERO_IOU: it prints as 0.000
        BOUNDARY_ACCURACY: f"{run[BOUNDARY_ACCURACY]:.4f}",
        BOUNDARY_MIOU: f"{run[BOUNDARY_MIOU]:.4f}",
        "params (M)": f"{run['params (M)']:.2f}",
        "GFLOPs": f"{run['GFLOPs']:.2f}",
    } for name, run in result["table"].iterrows()]


def table(table_rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in table_rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="finished run folders")
    parser.add_argument("--out", help="folder for compare's report and figures (default: compare/ beside the first run)")
    parser.add_argument("--cores", default="both", help="how the runs shared the CPU (printed above the table)")
    parser.add_argument("--tta", choices=("flip",), help="score every run with the flipped prediction averaged in")
    parser.add_argument("--label-size", type=int, nargs=2, metavar=("H", "W"), help="judge at this size's labels")
    args = parser.parse_args(argv)
    finished = [folder for folder in args.runs if (Path(folder) / METRICS).is_file()]
    for folder in sorted(set(args.runs) - set(finished)):
        print(f"accuracy_table.py: left out {folder}: no {METRICS} (the run did not finish; see its log)", file=sys.stderr)
    if not finished:
        print("accuracy_table.py: no finished run folders given (did every training fail? see the logs)", file=sys.stderr)
        return 2
    try:
        found = rows(finished, args.out or Path(finished[0]).parent / "compare", tta=args.tta, label_size=args.label_size)
    except SegkitError as err:
        print(f"accuracy_table.py: error: {err}", file=sys.stderr)
        return 2
    mode = "one after the other, both cores" if args.cores == "both" else "two side by side, one core and one thread each"
    labels = "x".join(map(str, args.label_size)) if args.label_size else "the largest trained size's"
    print(f"runs: {mode}; mIoU on the held-out validation items at {labels} labels, each model fed "
          f"at its own; test-time augmentation: {args.tta or 'none'}; GFLOPs per image and forward pass at that size\n")
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
