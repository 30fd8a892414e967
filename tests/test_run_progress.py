"""A run's progress: epochs placed at training minutes and images seen, a budget-cut epoch counted as the fraction
it ran, in Run.progress, in learning curves and in notebook.learning_check."""

import numpy as np
import pandas as pd
import pytest

from segkit import notebook, viz
from segkit.errors import SegkitError
from segkit.workflows import config as config_lib
from segkit.workflows import runs

BATCH = 8
GOOD_CONFUSION = [[90, 10], [10, 90]]  # mIoU 0.818 against a majority-class baseline of 0.25


def _run(tmp_path, rows) -> runs.Run:
    """A finished run folder with this history (loss, steps, epoch_steps, seconds per row) and good metrics."""
    run = runs.Run.create(tmp_path, config_lib.load({"name": "x", "data": {"path": "x", "size": [32, 32]},
                                                     "train": {"batch_size": BATCH}}))
    history = [{"epoch": i + 1, "steps": steps, "epoch_steps": full, "loss": loss, "val_loss": 1.0,
                "miou": 0.1, "val_miou": 0.1, "seconds": seconds} for i, (loss, steps, full, seconds) in enumerate(rows)]
    run.write_state({**run.state, "history": history, "status": "finished"})
    runs.write_json(run.file(runs.METRICS), {"miou": 0.818, "confusion_matrix": GOOD_CONFUSION})
    return run


def test_progress_places_each_epoch_at_its_minutes_images_and_fractional_epoch(tmp_path):
    # Two full epochs of 335 steps (10 min each), then a budget stop after 221 steps (6 min 40 s).
    progress = _run(tmp_path, [(2.0, 335, 335, 600), (1.5, 335, 335, 600), (1.2, 221, 335, 400)]).progress()
    np.testing.assert_allclose(progress["minutes"], [10, 20, 26 + 2 / 3])
    np.testing.assert_array_equal(progress["images_seen"], [335 * 8, 670 * 8, 891 * 8])
    np.testing.assert_allclose(progress["epoch"], [1, 2, 2 + 221 / 335])


def test_epochs_run_of_an_old_history_without_epoch_steps_counts_a_full_epoch_from_the_split(tmp_path):
    run = _run(tmp_path, [(2.0, 6, 6, 1), (1.0, 1, 6, 1)])
    run.write_state({**run.state, "history": [{k: v for k, v in row.items() if k != "epoch_steps"}
                                              for row in run.state["history"]]})
    runs.write_json(run.file(runs.DATASET), {"train": {"num_items": 45}})  # ceil(45 / 8) = 6 steps an epoch
    assert run.epochs_run == pytest.approx(1 + 1 / 6)


def test_learning_curves_draw_the_cut_epoch_at_its_minutes_and_images(tmp_path):
    progress = _run(tmp_path, [(2.0, 335, 335, 600), (1.5, 335, 335, 600), (1.2, 221, 335, 400)]).progress()
    fig = viz.plot_learning_curves({"run": progress})
    by_minutes, by_images = fig.axes[0], fig.axes[2]  # rows: minutes, images seen; columns: loss, mIoU
    assert by_minutes.get_xlabel() == "training minutes" and by_images.get_xlabel() == "images seen"
    np.testing.assert_allclose(by_minutes.lines[0].get_xdata(), [10, 20, 26 + 2 / 3])
    np.testing.assert_allclose(by_images.lines[0].get_xdata(), [2680, 5360, 7128])
    np.testing.assert_allclose(by_minutes.lines[0].get_ydata(), [2.0, 1.5, 1.2])


def test_learning_curves_name_a_frame_without_the_x_column():
    with pytest.raises(SegkitError, match="'minutes' column"):
        viz.plot_learning_curves(pd.DataFrame({"epoch": [1], "loss": [1.0]}))


def test_learning_check_judges_the_loss_on_full_epochs_only(tmp_path):
    # The loss fell only in a one-step epoch the budget cut: one batch's loss is not an epoch's.
    flat_then_cut = _run(tmp_path / "a", [(2.0, 335, 335, 600), (1.99, 335, 335, 600), (1.0, 1, 335, 2)])
    with pytest.raises(SegkitError, match="did not fall over the full epochs"):
        notebook.learning_check(flat_then_cut)
    one_full = _run(tmp_path / "b", [(2.0, 335, 335, 600), (1.0, 221, 335, 400)])
    with pytest.raises(SegkitError, match=r"at least 2 full epochs, found 1 and a partial one \(221/335 steps\)"):
        notebook.learning_check(one_full)
    learnt = _run(tmp_path / "c", [(2.0, 335, 335, 600), (1.5, 335, 335, 600), (3.0, 1, 335, 2)])
    assert "training loss 2 -> 1.5 over 2 full epochs" in notebook.learning_check(learnt)


def test_how_made_reads_data_minutes_epochs_and_the_command_from_the_run(tmp_path, monkeypatch):
    run = _run(tmp_path, [(2.0, 335, 335, 600), (1.5, 335, 335, 600), (1.2, 221, 335, 400)])
    runs.write_json(run.file(runs.DATASET), {"image_size": [128, 128], "train": {"num_items": 2675},
                                             "val": {"indices": list(range(300))}})
    monkeypatch.setattr(notebook, "_cpu_name", lambda: "Test CPU")
    env = notebook.Env(dataset="cityscapes-pairs", data=None, runs=tmp_path, gpu=None, smoke=False)
    text = notebook.how_made(run, env)
    # 26 min 40 s of training; 2 + 221/335 epochs; 891 steps of batch 8.
    for part in ("`x` on Test CPU", "from scratch", "float32", "2,675 items of `x` trained on",
                 "a seeded 300 held out (300 items)", "at 128x128",
                 "26.7 minutes of training", "2.66 epochs, 891 steps, 7,128 images seen", "Again: `segkit train x`"):
        assert part in text, (part, text)


def test_how_made_names_the_model_a_fine_tuned_run_started_from(tmp_path):
    run = _run(tmp_path, [(2.0, 10, 10, 60)])
    cfg = {**run.config, "model": {**run.config["model"], "init_from": "/x/runs/unet-city-1/best.keras"}}
    run.file(runs.CONFIG).write_text(config_lib.dump(cfg))
    runs.write_json(run.file(runs.DATASET), {"image_size": [32, 32], "train": {"num_items": 80},
                                             "val": {"indices": list(range(20))}})
    env = notebook.Env(dataset="camvid", data=None, runs=tmp_path, gpu=None, smoke=False)
    assert "initialised from `unet-city-1`" in notebook.how_made(run, env)
