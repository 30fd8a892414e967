"""`segkit.compare`: finished runs side by side in one report (report.md + PNG figures).

Scores come from each run's metrics.json when all runs were validated on the same items at the same
size. Runs validated on the same raw items prepared at different sizes are judged at the largest size's
labels (or at `label_size`, one of those sizes), each model fed the images at the size it was trained at
(`evaluate.classes_at`). Runs validated on different items are all evaluated again on the first run's
validation split. Runs are also
evaluated again when asked for test-time flips (`tta="flip"`), and when their metrics.json predates the
boundary-band scores. So the table always compares like with like. A run trained without validation
(data.val: 0) has no items to be judged on and is refused in one line naming it (`segkit evaluate RUN --data ...`
scores it). Latency is measured here, on this machine, one image at a time, with the same test-time
augmentation as the scores.
"""

import os
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd

from segkit import data as data_lib
from segkit import files, metrics, models, viz
from segkit.errors import SegkitError
from segkit.workflows import evaluate, loading, run_report, runs

LATENCY_REPEATS = 5
REPORT = "report.md"
CLASS_IOU, CURVES, SAMPLES = "class_iou.png", "learning_curves.png", "qualitative.png"
# Hidden in --out: the name and digest of every file compare wrote there, so a later call replaces only those.
LEDGER = ".segkit-compare.json"
ZERO_IOU = 0.0005  # below it an IoU prints as 0.000: "at zero" in tables and prose
BOUNDARY_ACCURACY = f"boundary acc ({metrics.BOUNDARY_WIDTH} px)"
BOUNDARY_MIOU = f"boundary mIoU ({metrics.BOUNDARY_WIDTH} px)"


def compare(run_dirs, *, out, latency=True, tta=None, label_size=None, names=None) -> dict:
    """Compares finished runs; writes `out`/report.md and figures; returns {"report", "table", "per_class"}.

    table: one row per run (mIoU, pixel accuracy, the same two over the boundary band, parameters, GFLOPs,
    training time, TTA, latency); per_class: per-class IoU, one column per run.

    Args:
        run_dirs: finished run folders.
        out: folder for report.md and the figures.
        latency: time inference (False leaves the latency column NaN).
        tta: None, or "flip": every run scored and timed on each image and its mirror, softmax averaged.
        label_size: (H, W) of the labels to judge at, when the runs were validated on the same items prepared at
            different sizes: one of those sizes (default: the largest, which keeps the most label detail).
        names: one name per run for the table's rows, the figures' legends and the confusion files (default: each
            run's config name, or its folder's name where two runs share a config).

    Example:
        segkit.compare(["runs/a", "runs/b"], out="comparison", names=["35 min", "70 min"])
    """
    if len(run_dirs) < 1:
        raise SegkitError("compare needs at least one run folder")
    evaluate.check_tta(tta)
    out = files.check_writable_folder(out, "--out")
    _check_each_run_once(run_dirs)
    _check_names(names, run_dirs)
    entries = [_load(path) for path in run_dirs]
    _name(entries, names)
    _check_same_classes(entries)
    ledger = files.Ledger(out, LEDGER, "segkit_compare")
    _check_outputs_replaceable(out, ledger, _output_names(entries))
    split, protocol = _judging_split(entries, tta, label_size)
    for entry in entries:
        if entry["rescore"]:
            cm, boundary_cm = evaluate.confusion(entry["model"], split.dataset.images, split.dataset.masks,
                                                 split.indices, num_classes=len(entry["classes"]),
                                                 input_size=entry["input_size"], tta=tta)
            entry["metrics"] = evaluate.summarize(cm, boundary_cm, entry["classes"])
        entry["latency_ms"] = _latency_ms(entry["model"], split, entry["input_size"], tta=tta) if latency else float("nan")

    table = _table(entries, tta)
    per_class = pd.DataFrame({e["name"]: pd.Series(e["metrics"]["per_class_iou"], dtype=float) for e in entries})
    classes = entries[0]["classes"]
    colors = np.asarray(entries[0]["dataset"]["colors"], dtype=np.uint8)
    images, truth, predicted = run_report.predicted_samples(split, {e["name"]: e["model"] for e in entries},
                                                            input_sizes={e["name"]: e["input_size"] for e in entries})
    figures = {
        CLASS_IOU: viz.plot_class_iou({e["name"]: per_class[e["name"]].to_numpy() for e in entries}, classes),
        CURVES: viz.plot_learning_curves({e["name"]: e["history"] for e in entries}),
        SAMPLES: viz.sample_grid(images, truth, colors, classes, predictions=predicted, panel_size=2.2),
    }
    for entry in entries:
        cm = np.asarray(entry["metrics"]["confusion_matrix"], dtype=np.int64)
        figures[_confusion_figure(entry)] = viz.plot_confusion(cm, classes, title=entry["name"])
    report = _markdown(entries, table, per_class, figures, split, protocol, tta)
    contents = {name: run_report.figure_png(fig) for name, fig in figures.items()}
    with files.writing_into(out, "--out"):
        out.mkdir(parents=True, exist_ok=True)
        ledger.write({**contents, REPORT: report.encode("utf-8")})
    print(f"report: {out / REPORT}")
    return {"report": out / REPORT, "table": table, "per_class": per_class}


def table_text(table: pd.DataFrame) -> str:
    """compare's table as plain text, for a terminal (a notebook displays the returned frame itself)."""
    return table.to_string(float_format=lambda v: f"{v:.4g}")


def _load(path) -> dict:
    run = runs.Run.open(path)
    if not run.file(runs.METRICS).is_file():
        raise SegkitError(f"run {run.path} has not finished (no {runs.METRICS}); finish it with segkit train --resume")
    run.require_validation("for compare, which scores every run on a run's validation items")  # before any model loads
    model, _ = loading.load_model(run.path)
    return {
        "run": run,
        "name": runs.run_name(run.config),
        "config": run.config,
        "model": model,
        "metrics": run.metrics,
        "dataset": run.dataset,
        "classes": run.dataset["classes"],
        "history": run.progress(),
        "train_seconds": run.state["train_seconds"],
        "epochs": run.epochs_run,
    }


def _check_each_run_once(run_dirs) -> None:
    """A run named twice (maybe spelled two ways) would only repeat its row: refused, naming it."""
    seen = {}
    for path in map(Path, run_dirs):
        first = seen.setdefault(os.path.realpath(path), path)
        if first is not path:
            same = "" if str(first) == str(path) else f" (as {first} and {path})"
            raise SegkitError(f"run {first} is given twice{same}; name each run once")


def _check_names(names, run_dirs) -> None:
    """One distinct, non-empty name per run, fit to be part of a file name (confusion_NAME.png)."""
    if names is None:
        return
    names = list(names)
    if len(names) != len(run_dirs):
        raise SegkitError(f"{len(names)} names given for {len(run_dirs)} runs; give one name per run, in order")
    for name in names:
        if not name.strip() or any(c in name for c in "/\\\0") or name.startswith("."):
            raise SegkitError(f"run name {name!r} cannot name a file (confusion_{name}.png): use letters, digits, "
                              "spaces, '-' or '_'")
        if names.count(name) > 1:
            raise SegkitError(f"run name {name!r} is given twice; names must differ")


def _output_names(entries) -> list[str]:
    """Every file compare writes into --out for these runs: the report and its figures."""
    return [REPORT, CLASS_IOU, CURVES, SAMPLES, *map(_confusion_figure, entries)]


def _confusion_figure(entry) -> str:
    return f"confusion_{entry['name']}.png"


def _check_outputs_replaceable(out: Path, ledger: files.Ledger, names) -> None:
    """Refuses, before any scoring, to write over a file in `out` that segkit compare did not write there (or that
    changed since): a user's own report.md or figure is never lost."""
    foreign = ledger.foreign(names)
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SegkitError(f"--out {out} holds {listed}, which segkit compare did not write (or which changed since); "
                          "move them away or choose another --out")


def _name(entries, names=None) -> None:
    """Each entry's row name: the one given, else its config name, or its folder's name where two share a config."""
    if names is not None:
        for entry, name in zip(entries, names):
            entry["name"] = name
        return
    configs = [e["name"] for e in entries]
    for entry in entries:
        if configs.count(entry["name"]) > 1:
            entry["name"] = entry["run"].path.name


def _check_same_classes(entries) -> None:
    first = entries[0]
    for entry in entries[1:]:
        if entry["classes"] != first["classes"]:
            raise SegkitError(f"runs {first['run'].path} and {entry['run'].path} predict different classes; "
                              "compare needs runs on the same classes")


def _judging_split(entries, tta, label_size=None):
    """(the split every run is scored on, how the scores were made); sets each entry's input_size and rescore."""
    sources = [_validation_source(e) for e in entries]
    if any(source["items"] != sources[0]["items"] for source in sources):
        split = run_report.validation_split(entries[0]["run"])
        _check_label_size(label_size, [split.image_size], "the first run's validation split")
        for entry in entries:
            entry.update(input_size=split.image_size, rescore=True)
        return split, "evaluating every model again on the first run's validation split"
    sizes = [source["size"] for source in sources]
    _check_label_size(label_size, sizes, "the runs' validation items")
    # By default the largest prepared size, which keeps the most label detail: every run is judged on its masks.
    judge = sizes.index(tuple(label_size)) if label_size else max(range(len(entries)), key=lambda i: np.prod(sizes[i] or (0,)))
    split = run_report.validation_split(entries[judge]["run"])
    at_own_size = []
    for entry, source in zip(entries, sources):
        input_size = tuple(entry["dataset"]["image_size"])
        at_own_size.append(source["size"] == input_size == split.image_size)
        scored_as_asked = tta is None and entry["metrics"].get("boundary_width") == metrics.BOUNDARY_WIDTH
        entry.update(input_size=input_size, rescore=not (at_own_size[-1] and scored_as_asked))
    if not any(entry["rescore"] for entry in entries):
        return split, "each run's metrics.json (all were validated on the same items)"
    if all(at_own_size):
        return split, "evaluating every model again on the same validation items, at the size all were trained at"
    fed = ", ".join(f"{e['name']} {_size_text(e['input_size'])}" for e in entries)
    return split, (f"the same validation items prepared at different sizes, scored at {_size_text(split.image_size)} labels; "
                   f"each model fed at its trained size: {fed} (images resized as data preparation resizes them, "
                   "class probabilities resized back bilinearly)")


def _check_label_size(label_size, sizes, where) -> None:
    if label_size is not None and tuple(label_size) not in [tuple(size) for size in sizes if size]:
        available = ", ".join(sorted({_size_text(size) for size in sizes if size})) or "none recorded"
        raise SegkitError(f"--label-size {_size_text(label_size)}: {where} are prepared at {available}; "
                          "give one of those sizes")


def _validation_source(entry) -> dict:
    """What a run was validated on: {"items": the raw items' identity, "size": the prepared (H, W) or None}.

    Items are the same when the caches were prepared from the same source, format, split and label decoding
    (max_color_distance) and the validation indices name the same items; a cache that is gone matches only its own
    folder and indices.
    """
    val = entry["dataset"]["val"]
    try:
        manifest = data_lib.load_prepared(val["path"]).manifest
    except SegkitError:
        manifest = {}
    if manifest.get("source") is None:
        return {"items": (val["path"], tuple(val["indices"])), "size": None}
    names = tuple(manifest["items"][i] for i in val["indices"])
    labels = manifest.get("max_color_distance")  # None: decoded at the default tolerance
    return {"items": (manifest["source"], manifest["format"], manifest.get("split"), labels, names),
            "size": tuple(manifest["image_size"])}


def _size_text(size) -> str:
    return "x".join(str(v) for v in size)


def _latency_ms(model, split, input_size, tta=None) -> float:
    """Median wall time of segkit.models.predict_probabilities on one validation image at `input_size` with test-time
    augmentation `tta` (after one warm-up call)."""
    image = data_lib.resize_image(np.asarray(split.dataset.images[int(split.indices[0])]), input_size)
    models.predict_probabilities(model, image, tta=tta)
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        models.predict_probabilities(model, image, tta=tta)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def classes_at_zero(per_class_iou) -> int:
    """Classes whose IoU shows as 0.000 in a three-decimal table (absent ones, NaN, are not counted).

    Args:
        per_class_iou: {class: IoU} or a sequence of IoUs.
    """
    values = np.asarray(list(per_class_iou.values()) if isinstance(per_class_iou, dict) else per_class_iou, dtype=float)
    return int(np.count_nonzero(values < ZERO_IOU))


def _table(entries, tta) -> pd.DataFrame:
    rows = []
    for e in entries:
        stats = models.model_stats(e["model"], input_shape=(*e["input_size"], 3))  # crop-trained models take any size
        rows.append({
            "run": e["name"],
            "model": models.label(e["config"]["model"]["name"], e["config"]["model"]["encoder"]),
            "input size": _size_text(e["input_size"]),
            "mIoU": e["metrics"]["miou"],
            "pixel accuracy": e["metrics"]["pixel_accuracy"],
            BOUNDARY_MIOU: _number(e["metrics"]["boundary_miou"]),
            BOUNDARY_ACCURACY: _number(e["metrics"]["boundary_pixel_accuracy"]),
            "classes at zero": classes_at_zero(e["metrics"]["per_class_iou"]),
            "params (M)": stats["params"] / 1e6,
            "GFLOPs": stats["gflops"],
            "epochs": e["epochs"],
            "training (min)": e["train_seconds"] / 60,
            "TTA": tta or "none",
            "latency (ms/image)": e["latency_ms"],
        })
    return pd.DataFrame(rows).set_index("run")


def _markdown(entries, table, per_class, figures, split, protocol, tta) -> str:
    lines = [
        "# segkit comparison",
        "",
        f"Validation: {len(split)} images of {split.path} at {_size_text(split.image_size)}; scores from {protocol}.",
        "mIoU is the mean IoU over the classes present in the validation truth or predictions, from one "
        "confusion matrix over all validation pixels (void pixels not counted). "
        f"{BOUNDARY_MIOU} and {BOUNDARY_ACCURACY} are mIoU and pixel accuracy over the boundary band only: the "
        f"labelled pixels within {metrics.BOUNDARY_WIDTH} pixels (a {2 * metrics.BOUNDARY_WIDTH + 1}x"
        f"{2 * metrics.BOUNDARY_WIDTH + 1} window) of a pixel of another labelled class, at the labels' resolution. "
        f"Latency: median of {LATENCY_REPEATS} single-image predictions at each model's input size on this machine. "
        "GFLOPs per image and forward pass at the input size each model is fed at.",
        _tta_text(tta),
        "",
        "Runs: " + ", ".join(f"`{e['name']}` ({e['run'].path})" for e in entries),
        "",
        _markdown_table(table, "{:.4g}"),
        "",
        "## Per-class IoU",
        "",
        _markdown_table(per_class, "{:.3f}"),
        "",
    ]
    for name in figures:
        # Encoded: a run name with spaces or brackets would otherwise end the link, and markdown shows plain text.
        lines += [f"![{Path(name).stem}]({urllib.parse.quote(name)})", ""]
    return "\n".join(lines)



def _tta_text(tta) -> str:
    if tta is None:
        return "Test-time augmentation: none."
    return ("Test-time augmentation: flip (each image and its horizontal mirror, softmax averaged: two forward "
            "passes), in the scores and in the latency alike.")


def _number(value) -> float:
    """A metrics.json number as a float, NaN for null (nothing to score)."""
    return float("nan") if value is None else float(value)


def _markdown_table(frame: pd.DataFrame, float_format: str) -> str:
    """A GitHub markdown table of a frame with its index as the first column (NaN shown as n/a)."""

    def cell(value):
        if isinstance(value, float):
            return "n/a" if np.isnan(value) else float_format.format(value)
        return str(value)

    header = [frame.index.name or "", *map(str, frame.columns)]
    rows = [[str(index), *map(cell, row)] for index, row in zip(frame.index, frame.itertuples(index=False))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
