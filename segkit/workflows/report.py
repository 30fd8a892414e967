"""What a finished run leaves behind: metrics from evaluating best.keras on the validation split, tables, figures."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from segkit import metrics, models, viz
from segkit.workflows import evaluate, loading, runs

GRID_ITEMS = 4


def finish_run(run: runs.Run, data, batch_size: int = 8) -> dict | None:
    """Evaluates best.keras on the validation split and writes metrics.json, per_class.csv and figures/.

    Every number comes from that evaluation (segkit.metrics on the saved model's predictions) or from
    the run's own history; returns the metrics dict, or None when no epoch finished.
    """
    state = run.state
    if not run.file(runs.BEST).is_file():
        return None
    model, _ = loading.load_model(run.file(runs.BEST))
    val = data.val
    cm = evaluate.confusion(model, val.dataset.images, val.dataset.masks, val.indices,
                            num_classes=data.num_classes, batch_size=batch_size)
    result = {
        **evaluate.summarize(cm, data.classes),
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "num_val": len(val),
        "train_seconds": state["train_seconds"],
    }
    runs.write_json(run.file(runs.METRICS), result)
    table = metrics.report(cm, data.classes)
    runs.write_text(run.file(runs.PER_CLASS), table.to_csv(float_format="%.6f"))
    save_figure(viz.plot_learning_curves(pd.DataFrame(state["history"]), title=run.path.name), run.figure_path("learning_curves.png"))
    save_figure(viz.plot_confusion(cm, data.classes, title=run.path.name), run.figure_path("confusion.png"))
    images, truth, predicted = predicted_samples(val, {"prediction": model})
    grid = viz.sample_grid(images, truth, data.colors, data.classes, predictions=predicted)
    save_figure(grid, run.figure_path("val_predictions.png"))
    print(summary(run, result, table))
    return result


def predicted_samples(split, models_by_name: dict, count: int = GRID_ITEMS):
    """(images, truth, {name: predicted classes}) for the first `count` items of a split."""
    chosen = np.sort(split.indices[:count])
    images = np.asarray(split.dataset.images[chosen])
    truth = np.asarray(split.dataset.masks[chosen])
    predictions = {name: models.predict(net, images).argmax(-1).astype(np.uint8) for name, net in models_by_name.items()}
    return images, truth, predictions


def summary(run: runs.Run, result: dict, table: pd.DataFrame) -> str:
    """The table printed when a run ends."""
    lines = [
        f"run folder      {run.path}",
        f"epochs          {result['epochs']} (best {result['best_epoch']})",
        f"val mIoU        {result['miou']:.4f}   pixel accuracy {result['pixel_accuracy']:.4f}   ({result['num_val']} images)",
        f"training time   {result['train_seconds'] / 60:.1f} min",
        table.to_string(float_format=lambda v: f"{v:.4f}"),
    ]
    return "\n".join(lines)


def save_figure(fig, path) -> None:
    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)  # a no-op for bare Figures; frees pyplot-managed ones
