"""What a finished run leaves behind: metrics from evaluating best.keras on the validation split, tables, figures."""

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from segkit import data as data_lib
from segkit import files, metrics, viz
from segkit.errors import SegkitError
from segkit.workflows import datasets, evaluate, loading, runs

GRID_ITEMS = 4


def finish_run(run: runs.Run, data, batch_size: int = 8) -> dict | None:
    """Evaluates best.keras on the validation split and writes per_class.csv, figures/ and metrics.json (a run
    without validation, data.val: 0, gets the learning curves and a metrics.json without scores, num_val 0).

    Every number comes from that evaluation (segkit.metrics on the saved model's predictions) or from
    the run's own history; returns the metrics dict, or None when no epoch finished. metrics.json is written
    last: a run holding it has its whole report (a report cut short is written again by `segkit train --resume`).
    """
    state = run.state
    if not run.file(runs.BEST).is_file():
        return None
    if data.val is None:
        return _finish_unvalidated(run, state)
    model, _ = loading.load_model(run.file(runs.BEST))
    val = data.val
    cm, boundary_cm = evaluate.confusion(model, val.dataset.images, val.dataset.masks, val.indices,
                            num_classes=data.num_classes, batch_size=batch_size)
    result = {
        **evaluate.summarize(cm, boundary_cm, data.classes),
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "num_val": len(val),
        "train_seconds": state["train_seconds"],
    }
    table = metrics.per_class_table(cm, data.classes)
    files.write_text(run.file(runs.PER_CLASS), table.to_csv(float_format="%.6f"))
    save_figure(viz.plot_learning_curves(run.progress(), title=run.path.name), run.figure_path("learning_curves.png"))
    save_figure(viz.plot_confusion(cm, data.classes, title=run.path.name), run.figure_path("confusion.png"))
    images, truth, predicted = predicted_samples(val, {"prediction": model})
    grid = viz.sample_grid(images, truth, data.colors, data.classes, predictions=predicted)
    save_figure(grid, run.figure_path("val_predictions.png"))
    runs.write_json(run.file(runs.METRICS), result)
    print(summary(run, result, table))
    return result


def _finish_unvalidated(run: runs.Run, state: dict) -> dict:
    """The report of a run without validation (data.val: 0): no scores, the learning curves, and how to score it."""
    result = {"best_epoch": state["best_epoch"], "epochs": state["epoch"], "num_val": 0,
              "train_seconds": state["train_seconds"]}
    save_figure(viz.plot_learning_curves(run.progress(), title=run.path.name), run.figure_path("learning_curves.png"))
    runs.write_json(run.file(runs.METRICS), result)
    print(summary(run, result))
    return result


def predicted_samples(split, models_by_name: dict, count: int = GRID_ITEMS, input_sizes: dict | None = None):
    """(images, truth, {name: predicted classes}) for the first `count` items of a split.

    input_sizes: {name: (H, W)} feeds that model the images at that size and upsamples its predictions to the
    split's (segkit.workflows.evaluate.classes_at); a model not named is fed the images as they are.
    """
    chosen = np.sort(split.indices[:count])
    images = np.asarray(split.dataset.images[chosen])
    truth = np.asarray(split.dataset.masks[chosen])
    sizes = input_sizes or {}
    predictions = {name: evaluate.classes_at(net, images, input_size=sizes.get(name))
                   for name, net in models_by_name.items()}
    return images, truth, predictions


def validation_split(run: runs.Run) -> datasets.Split:
    """The validation items a run was scored on (its dataset.json), read from the prepared cache."""
    run.require_validation("to score or draw")
    val = run.dataset["val"]
    if not Path(val["path"]).is_dir():
        raise SegkitError(f"validation data {val['path']} of run {run.path} is gone; prepare it again")
    return datasets.Split(data_lib.load_prepared(val["path"]), np.asarray(val["indices"]), Path(val["path"]))


def summary(run: runs.Run, result: dict, table: pd.DataFrame | None = None) -> str:
    """The table printed when a run ends; without validation (no `table`), how to score the kept model instead."""
    if table is None:
        epochs = f"{result['epochs']} (best.keras holds the last)"
        scores = (f"none: trained on every item without validation (data.val: 0); score it with "
                  f"segkit evaluate {run.path} --data DATA")
    else:
        epochs = f"{result['epochs']} (best {result['best_epoch']})"
        scores = f"{result['miou']:.4f}   pixel accuracy {result['pixel_accuracy']:.4f}   ({result['num_val']} images)"
    lines = [
        f"run folder      {run.path}",
        f"epochs          {epochs}",
        f"val mIoU        {scores}",
        f"training time   {result['train_seconds'] / 60:.1f} min",
    ]
    return "\n".join(lines if table is None else [*lines, table.to_string(float_format=lambda v: f"{v:.4f}")])


def save_figure(fig, path) -> None:
    """Writes a figure to `path` as a PNG, whole or not at all."""
    files.write_bytes(path, figure_png(fig))


def figure_png(fig) -> bytes:
    """A figure encoded as PNG at the reports' resolution; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)  # a no-op for bare Figures; frees pyplot-managed ones
    return buffer.getvalue()
