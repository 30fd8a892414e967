"""Config levers reach what they claim to: class weights the loss, bn_momentum every BatchNormalization layer,
weight_decay the optimizer's update, data.format a raw folder prepared once into the cache, label_stride the pixels
training scores."""

import hashlib
import json

import keras
import numpy as np
import pandas as pd
import pytest

import segkit
from segkit import data, losses
from segkit.errors import SegkitError
from segkit.models.layers import ResizeToMatch
from segkit.workflows import config, datasets, optim
from segkit.workflows import train as train_module
from training_support import brute_force_run_scores, killed_run, tiny_config, train_with_stand_in, upsample_bilinear
from training_support import train_quietly as _train


def test_median_class_weights_give_the_hand_computed_validation_loss(dataset, tmp_path):
    run = train_with_stand_in(tiny_config(dataset, train={"epochs": 1}, loss={"class_weights": "median"}), tmp_path)
    prepared = data.load_prepared(dataset)
    classes = prepared.num_classes
    # median-frequency weights from the training items' masks, counted here with numpy
    train_idx = np.setdiff1d(np.arange(len(prepared.images)), run.dataset["val"]["indices"])
    masks = np.asarray(prepared.masks[train_idx])
    share = np.bincount(masks[masks != 255], minlength=classes)[:classes] / np.sum(masks != 255)
    weights = np.array([np.median(share[share > 0]) / s if s > 0 else 0.0 for s in share])
    # the validation loss of the one-epoch model (all 4 validation items in one batch) by hand
    val_idx = np.asarray(run.dataset["val"]["indices"])
    logits = keras.saving.load_model(run.path / "best.keras")(np.asarray(prepared.images[val_idx], np.float32))
    log_p = np.asarray(keras.ops.log_softmax(keras.ops.cast(logits, "float64"), axis=-1))
    truth = np.asarray(prepared.masks[val_idx]).astype(int)
    keep = truth != 255
    nll = -np.take_along_axis(log_p, np.where(keep, truth, 0)[..., None], axis=-1)[..., 0][keep]
    pixel_weight = weights[truth[keep]]
    val_loss = pd.read_csv(run.path / "history.csv")["val_loss"].iloc[0]
    assert val_loss == pytest.approx(np.sum(pixel_weight * nll) / np.sum(pixel_weight), rel=1e-4)
    # ...and not the unweighted mean (ten times the tolerance above away: the check above tells them apart)
    assert val_loss != pytest.approx(nll.mean(), rel=1e-3)


def _batch_norm_momenta(model):
    # Keras' own recursive walk, not segkit's
    return [layer.momentum for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def test_bn_momentum_reaches_every_batch_norm_layer_and_its_update():
    cfg = config.load({"data": {"path": "x"}, "model": {"name": "pspnet", "encoder": "resnet18", "bn_momentum": 0.7}})
    model = train_module.build_model(cfg, num_classes=3, image_size=(64, 64))
    momenta = _batch_norm_momenta(model)
    assert len(momenta) > 20 and set(momenta) == {0.7}
    default = train_module.build_model(config.load({"data": {"path": "x"}, "model": {"encoder": "resnet18"}}), 3, (64, 64))
    assert set(_batch_norm_momenta(default)) == {0.99}  # null keeps Keras' default
    # one training-mode call moves the first layer's moving mean by 1 - momentum of the batch mean
    bn = next(layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(keras.Model(model.input, bn.input)(x))
    before = keras.ops.convert_to_numpy(bn.moving_mean)
    model(x, training=True)
    expected = 0.7 * before + 0.3 * features.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_from_the_config_shrinks_the_weights_as_hand_computed(name):
    lr, decay = 0.1, 0.5
    spec = config.load({"data": {"path": "x"}, "optimizer": {"name": name, "learning_rate": lr, "weight_decay": decay}})
    optimizer = optim.build(spec["optimizer"], total_steps=10)
    assert optimizer.weight_decay == decay
    start = np.array([1.0, -2.0, 3.0, 0.5], "float32")
    grad = np.array([0.5, 0.0, -1.0, 2.0], "float32")
    variable = keras.Variable(start)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
    # decoupled decay: w <- w - lr * decay * w, beside the gradient step. First steps: SGD (momentum or not) -lr * g;
    # Adam -lr * m_hat / (sqrt(v_hat) + eps) = -lr * g / (|g| + eps / sqrt(1 - beta_2))
    step = -lr * grad if name == "sgd" else -lr * grad / (np.abs(grad) + 1e-7 / np.sqrt(1 - 0.999))
    expected = start * (1 - lr * decay) + step
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5, atol=1e-6)


def test_a_raw_dataset_with_data_format_is_prepared_into_the_cache_once(tmp_path, capsys):
    raw = tmp_path / "city"
    data.write_synthetic(raw, 12, seed=3, size=(32, 32))
    cache = tmp_path / "cache"
    cfg = tiny_config(raw, data={"format": "cityscapes-pairs", "cache": str(cache), "size": [32, 32]}, train={"epochs": 1})
    run = train_with_stand_in(cfg, tmp_path / "runs")
    digest = hashlib.sha1(str(raw.resolve()).encode()).hexdigest()[:8]  # the source's absolute path
    prepared = cache / f"cityscapes-pairs-city-all-32x32-train-{digest}"
    assert [p.name for p in cache.iterdir()] == [prepared.name]
    assert run.dataset["train"]["path"] == str(prepared.resolve())
    assert "preparing cityscapes-pairs dataset" in capsys.readouterr().out
    # it holds what `segkit data prepare` makes of the same folder
    data.prepare("cityscapes-pairs", raw, tmp_path / "direct", size=(32, 32))
    cached, direct = data.load_prepared(prepared), data.load_prepared(tmp_path / "direct")
    np.testing.assert_array_equal(cached.images, direct.images)
    np.testing.assert_array_equal(cached.masks, direct.masks)
    # a second run reads the cache as it is
    manifest = (prepared / "manifest.json").read_bytes()
    stamp = (prepared / "manifest.json").stat().st_mtime_ns
    second = train_with_stand_in(cfg, tmp_path / "runs")
    assert "preparing" not in capsys.readouterr().out
    assert (prepared / "manifest.json").stat().st_mtime_ns == stamp and (prepared / "manifest.json").read_bytes() == manifest
    assert json.loads((second.path / "dataset.json").read_text())["train"]["path"] == str(prepared.resolve())


def test_same_named_folders_and_other_sizes_get_their_own_cache_entries(tmp_path):
    for parent in ("a", "b"):
        data.write_synthetic(tmp_path / parent / "city", 2, seed=0, size=(32, 32))
    cache = tmp_path / "cache"
    paths = {datasets.open_dataset(tmp_path / parent / "city", format="cityscapes-pairs", size=size, cache=cache)[1]
             for parent in ("a", "b") for size in ((32, 32), (16, 16))}
    assert len(paths) == 4 and {p.parent for p in paths} == {cache}
    assert {p.name.split("-")[4] for p in paths} == {"32x32", "16x16"}


def tiny_resize_model(cfg, num_classes, image_size):
    """Stand-in for a model that ends in a bilinear upsampling to the input size (Fast-SCNN, PSPNet): strided conv,
    1x1 classifier, `ResizeToMatch` to the image."""
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    return keras.Model(inputs, ResizeToMatch(name="logits", dtype="float32")([x, inputs]), name="tiny_resize")


def test_label_stride_scores_validation_on_every_second_pixel_and_saves_the_full_size_model(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_resize_model)
    run = _train(tiny_config(dataset, train={"epochs": 1, "label_stride": 2}), tmp_path)
    prepared = data.load_prepared(dataset)
    val_idx = np.asarray(run.dataset["val"]["indices"])
    images, truth = np.asarray(prepared.images[val_idx], np.float32), np.asarray(prepared.masks[val_idx]).astype(int)
    best = keras.saving.load_model(run.path / "best.keras")
    assert best.output.shape[1:3] == truth.shape[1:3]  # 32x32: the saved model is the full-size one
    features = keras.Model(best.input, best.get_layer("classifier").output)(images)
    strided = upsample_bilinear(np.asarray(features, np.float64), (16, 16))  # numpy, half-pixel centres

    def cross_entropy(logits, masks):
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        keep = masks != 255
        return -np.take_along_axis(log_p, np.where(keep, masks, 0)[..., None], axis=-1)[..., 0][keep].mean()

    val_loss = pd.read_csv(run.path / "history.csv")["val_loss"].iloc[0]
    assert val_loss == pytest.approx(cross_entropy(strided, truth[:, 1::2, 1::2]), rel=1e-4)
    assert val_loss != pytest.approx(cross_entropy(strided, truth[:, ::2, ::2]), rel=1e-3)  # the other offset
    # metrics.json scores the full-size model on the full-size masks
    _, miou, _ = brute_force_run_scores(run, dataset)
    assert run.metrics["miou"] == pytest.approx(miou, abs=1e-12)


def test_label_stride_divides_ohem_min_kept_by_its_square(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_resize_model)
    asked, real_get = [], losses.get
    monkeypatch.setattr(losses, "get", lambda name, **options: asked.append(options) or real_get(name, **options))
    loss = {"name": "ohem", "ohem_min_kept": 1000}
    _train(tiny_config(dataset, train={"epochs": 1, "label_stride": 2}, loss=loss), tmp_path)
    assert asked[-1]["ohem_min_kept"] == 250


@pytest.mark.parametrize(("model", "stride", "message"), [
    ("tiny_resize", 3, r"train.label_stride 3 does not divide the 32x32 images"),
    ("unet", 2, r"computes its output 'logits' at the input size"),
])
def test_a_label_stride_the_model_or_data_cannot_take_leaves_no_run_folder(dataset, tmp_path, monkeypatch, model, stride,
                                                                           message):
    if model == "tiny_resize":
        monkeypatch.setattr(train_module, "build_model", tiny_resize_model)
    config_dict = tiny_config(dataset, model={"name": "unet", "encoder": "resnet18"}, train={"label_stride": stride})
    with pytest.raises(SegkitError, match=message):
        _train(config_dict, tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_label_stride_run_killed_mid_commit_resumes_to_the_uninterrupted_result(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", tiny_resize_model)
    config_dict = tiny_config(dataset, train={"epochs": 2, "label_stride": 2}, optimizer={"schedule": "poly"})
    whole = _train(config_dict, tmp_path / "whole")
    killed = killed_run(config_dict, tmp_path / "killed", monkeypatch, 2)
    resumed = segkit.train(None, resume=killed, verbose=0)
    a, b = (pd.read_csv(r.path / "history.csv").drop(columns="seconds") for r in (whole, resumed))
    pd.testing.assert_frame_equal(a, b, atol=1e-5)
    for x, y in zip(*(keras.saving.load_model(r.path / "best.keras").get_weights() for r in (whole, resumed))):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_class_uniform_reaches_the_training_loader_only(dataset, stand_in, tmp_path, monkeypatch):
    loaders = []
    make_loader = train_module.data_lib.make_loader

    def recording_loader(*args, **kwargs):
        loaders.append(make_loader(*args, **kwargs))
        return loaders[-1]

    monkeypatch.setattr(train_module.data_lib, "make_loader", recording_loader)
    _train(tiny_config(dataset, train={"epochs": 1, "class_uniform": 1.0, "precise_bn": 0}), tmp_path)
    training = [loader for loader in loaders if loader.shuffle]
    assert training and all(loader.class_uniform == 1.0 and loader.holders for loader in training)
    assert all(loader.class_uniform == 0 for loader in loaders if not loader.shuffle)
