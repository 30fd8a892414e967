"""TensorBoard logs of a run: fixed validation pictures (image | truth | prediction) and per-class IoU each epoch."""

import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from segkit import data
from segkit.workflows import tensorboard
from training_support import brute_force_run_scores, prepared_synthetic, tiny_config, train_with_stand_in


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of the stand-in model on the synthetic city, and its prepared dataset."""
    root = tmp_path_factory.mktemp("board")
    dataset = prepared_synthetic(root)
    return train_with_stand_in(tiny_config(dataset, train={"epochs": 1}), root / "runs"), dataset


def _events(run) -> EventAccumulator:
    events = EventAccumulator(str(run.path / tensorboard.LOG_DIR / "validation"), size_guidance={"tensors": 0})
    events.Reload()
    return events


def test_the_validation_pictures_show_each_fixed_image_beside_its_truth_in_the_class_colours(trained):
    run, dataset = trained
    (logged,) = _events(run).Tensors(tensorboard.IMAGE_TAG)  # one epoch: one entry
    width_text, height_text, *pngs = tensor_util.make_ndarray(logged.tensor_proto)
    assert len(pngs) == tensorboard.PICTURES and logged.step == 0
    prepared = data.load_prepared(dataset)
    first = run.dataset["val"]["indices"][0]
    strip = np.asarray(Image.open(io.BytesIO(pngs[0])).convert("RGB"))
    height, width = prepared.images.shape[1:3]
    assert strip.shape == (height, 3 * width, 3) and (int(width_text), int(height_text)) == (3 * width, height)
    np.testing.assert_array_equal(strip[:, :width], prepared.images[first])
    colors = np.asarray(prepared.colors, np.uint8)
    truth = np.asarray(prepared.masks[first])
    expected_truth = np.where((truth == 255)[..., None], 0, colors[np.minimum(truth, len(colors) - 1)])
    np.testing.assert_array_equal(strip[:, width:2 * width], expected_truth)
    # The prediction third is drawn in class colours only.
    palette = {tuple(c) for c in colors}
    assert {tuple(p) for p in strip[:, 2 * width:].reshape(-1, 3)} <= palette


def test_the_per_class_iou_scalars_are_the_validation_scores_of_that_epoch(trained):
    run, dataset = trained
    events = _events(run)
    classes = run.dataset["classes"]
    logged = {tag.removeprefix(tensorboard.IOU_TAG): events.Tensors(tag) for tag in events.Tags()["tensors"]
              if tag.startswith(tensorboard.IOU_TAG)}
    # One epoch: best.keras is the model that epoch validated, so a brute-force IoU of it is the expected value.
    iou, _, _ = brute_force_run_scores(run, dataset)
    expected = {name: value for name, value in zip(classes, iou) if not np.isnan(value)}
    assert set(logged) == set(expected) and expected
    for name, value in expected.items():
        (entry,) = logged[name]
        assert entry.step == 0 and float(tensor_util.make_ndarray(entry.tensor_proto)) == pytest.approx(value, abs=1e-6), name
