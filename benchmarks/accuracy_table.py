"""The ablation table of benchmarks/accuracy_cpu.sh, read from finished run folders.

One markdown row per run: config name, training minutes, epochs (fractional: a time budget ends one
part-way), held-out mIoU and classes at zero IoU (metrics.json: best.keras on the run's validation
split), params and GFLOPs per image at the evaluated size (segkit.models.model_stats).
Run from the repository root:  python benchmarks/accuracy_table.py RUN_DIR [RUN_DIR ...] [--cores both|split]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from segkit import models  # noqa: E402
from segkit.errors import SegkitError  # noqa: E402
from segkit.workflows import runs, train  # noqa: E402

COLUMNS = ("config", "minutes", "epochs", "held-out mIoU", "classes at zero IoU", "params (M)", "GFLOPs")


def row(folder) -> dict:
    """One table row of the run in `folder`; mIoU and zero classes are '-' when no epoch finished."""
    run = runs.Run.open(folder)
    cfg, state, dataset = run.config, run.state, run.dataset
    stats = models.model_stats(train.build_model(cfg, len(dataset["classes"]), tuple(dataset["image_size"])))
    scored = run.file(runs.METRICS).is_file()
    metrics = run.metrics if scored else {}
    zero = sum(1 for iou in metrics.get("per_class_iou", {}).values() if iou == 0)
    return {
        "config": cfg["name"],
        "minutes": f"{state['train_seconds'] / 60:.1f}",
        "epochs": f"{run.epochs_run:.2f}",
        "held-out mIoU": f"{metrics['miou']:.4f}" if scored else "-",
        "classes at zero IoU": str(zero) if scored else "-",
        "params (M)": f"{stats['params'] / 1e6:.2f}",
        "GFLOPs": f"{stats['gflops']:.2f}",
    }


def table(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders")
    parser.add_argument("--cores", default="both", help="how the runs shared the CPU (printed above the table)")
    args = parser.parse_args(argv)
    if not args.runs:
        print("accuracy_table.py: no run folders given (did every training fail? see the logs)", file=sys.stderr)
        return 2
    try:
        rows = [row(folder) for folder in args.runs]
    except SegkitError as err:
        print(f"accuracy_table.py: error: {err}", file=sys.stderr)
        return 2
    mode = "one after the other, both cores" if args.cores == "both" else "two side by side, one core and one thread each"
    print(f"runs: {mode}; mIoU on each run's held-out validation split; GFLOPs per image at the evaluated size\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
