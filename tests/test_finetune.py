"""Fine-tuning: model.init_from carries matching layers over from a trained model, train.freeze_encoder_epochs warms up."""

import hashlib
import itertools
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import yaml

import segkit
from segkit import data, models
from segkit.errors import SegkitError
from segkit.workflows import config as config_lib
from segkit.workflows import callbacks, finetune, loading, runs
from segkit.workflows import train as train_module
from training_support import Killed, kill_at_commit, tiny_config, tiny_model

TARGET_CLASSES = 11
ENCODER = models.encoder_layer_names("unet", "resnet18")
HEAD = "final_conv"  # the U-Net's classifier: its kernel has one output per class


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A U-Net-R18 for 19 classes after one training step on synthetic data, saved as .keras: the model to start from."""
    model = models.build("unet", "resnet18", num_classes=19, input_shape=(32, 32, 3))
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"), rng.integers(0, 19, (2, 32, 32)))
    path = tmp_path_factory.mktemp("source") / "source.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def eleven_classes(tmp_path_factory):
    """A prepared folder-format dataset of 16 random 32x32 scenes with 11 classes (blocks of 8x8 pixels)."""
    raw = tmp_path_factory.mktemp("eleven") / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    (raw / "classes.txt").write_text("".join(f"class{c}\n" for c in range(TARGET_CLASSES)))
    rng = np.random.default_rng(0)
    for i in range(16):
        mask = np.kron(rng.integers(0, TARGET_CLASSES, (4, 4)), np.ones((8, 8), int)).astype(np.uint8)
        image = (mask[..., None] * np.array([23, 7, 13]) % 256).astype(np.uint8) + rng.integers(0, 20, (32, 32, 3), np.uint8)
        cv2.imwrite(str(raw / "images" / f"{i}.png"), image)
        cv2.imwrite(str(raw / "masks" / f"{i}.png"), mask)
    out = raw.parent / "prepared"
    data.prepare("folder", raw, out)
    return out


def _weights(model) -> dict:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def _model(path):
    return loading.load_model(path)[0]


def _config(dataset, source, **train):
    return tiny_config(dataset, name="target", model={"name": "unet", "encoder": "resnet18", "init_from": str(source)},
                       train={"epochs": 1, **train})


def test_init_from_loads_every_layer_of_matching_name_and_shapes_and_starts_the_head_afresh(source_file):
    source = _weights(_model(source_file))
    cfg = finetune.pin_source(config_lib.load(_config("unused", source_file)))
    model = train_module.build_model(cfg, TARGET_CLASSES, (32, 32))
    fresh = _weights(model)
    finetune.init_from(model, cfg)
    loaded = _weights(model)
    assert set(loaded) == set(source)
    for name, values in loaded.items():
        if name == HEAD:
            assert values[0].shape[-1] == TARGET_CLASSES and _same(values, fresh[name])
        else:
            assert _same(values, source[name]), name
    # The check can fail: a fresh build differs from the source except where an initialisation is constant.
    assert sum(not _same(fresh[n], source[n]) for n in source if n != HEAD) > len(source) / 2


@pytest.mark.slow
def test_a_run_from_a_run_folder_records_its_source_and_logs_what_it_loaded(source_file, eleven_classes, tmp_path, capsys):
    source_run = runs.Run.create(tmp_path / "earlier", config_lib.load(tiny_config(eleven_classes)))
    best_keras = shutil.copy(source_file, source_run.file(runs.BEST))
    run = segkit.train(_config(eleven_classes, source_run.path, freeze_encoder_epochs=1), runs_dir=tmp_path / "runs", verbose=0)
    out = capsys.readouterr().out
    recorded = yaml.safe_load((run.path / "config.yaml").read_text())["model"]
    assert recorded["init_from"] == str(best_keras)
    assert recorded["init_from_sha256"] == hashlib.sha256(best_keras.read_bytes()).hexdigest()
    with_weights = len(_weights(_model(run.path)))
    assert f"loaded {with_weights - 1} of this model's {with_weights} layers with weights" in out
    assert "initialised afresh (1): final_conv (weight shapes" in out
    # One frozen epoch: the encoder, BatchNorm statistics included, is the source's; the decoder has trained.
    source, trained = _weights(_model(source_file)), _weights(_model(run.path))
    assert all(_same(trained[name], source[name]) for name in ENCODER)
    assert not _same(trained["decoder_stage4b_conv"], source["decoder_stage4b_conv"])
    assert trained[HEAD][0].shape[-1] == TARGET_CLASSES


@pytest.mark.slow
def test_frozen_warm_up_keeps_the_encoder_for_its_epochs_then_trains_it_across_a_resume(
        source_file, eleven_classes, tmp_path, monkeypatch):
    config = _config(eleven_classes, source_file, epochs=3, freeze_encoder_epochs=2)
    commit = kill_at_commit(monkeypatch, epoch=2)
    with pytest.raises(Killed):
        segkit.train(config, runs_dir=tmp_path, verbose=0)
    monkeypatch.setattr(runs.Run, "write_state", commit)
    (folder,) = tmp_path.iterdir()
    source = _weights(_model(source_file))
    after_one = _weights(_model(folder / "last-0001.keras"))
    after_two = _weights(_model(folder / "last-0002.keras"))  # written, not committed: the resume redoes epoch 2
    for name in ENCODER:
        assert _same(after_one[name], source[name]) and _same(after_two[name], source[name]), name
    run = segkit.train(None, resume=folder, verbose=0)
    final = _weights(_model(run.path / run.state["checkpoint"]))
    assert run.state["epoch"] == 3
    changed = [name for name in ENCODER if not _same(final[name], source[name])]
    assert len(changed) == len(ENCODER)


def test_a_missing_source_or_one_without_matching_layers_is_one_line_and_leaves_no_run_folder(
        eleven_classes, tmp_path, monkeypatch):
    with pytest.raises(SegkitError, match=r"^model\.init_from: model .*nowhere\.keras does not exist") as missing:
        segkit.train(_config(eleven_classes, tmp_path / "nowhere.keras"), runs_dir=tmp_path / "runs", verbose=0)
    foreign = tmp_path / "foreign.keras"
    tiny_model(None, 3, (32, 32)).save(foreign)
    with pytest.raises(SegkitError, match=r"none of its layers matches a layer of this unet-resnet18 model") as unmatched:
        segkit.train(_config(eleven_classes, foreign), runs_dir=tmp_path / "runs", verbose=0)
    assert "\n" not in str(missing.value) + str(unmatched.value)
    assert not (tmp_path / "runs").exists()


def test_a_source_whose_digest_is_not_the_pinned_one_is_refused(source_file):
    cfg = config_lib.load(_config("unused", source_file))
    cfg["model"]["init_from_sha256"] = "0" * 64
    with pytest.raises(SegkitError, match="has sha256 .* not the 0000.* model.init_from_sha256 gives"):
        finetune.pin_source(cfg)


def test_a_relative_source_is_recorded_relative_so_a_run_names_no_machine_folder(source_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(source_file.parent, tmp_path / "models")
    relative = Path("models") / source_file.name
    pinned = finetune.pin_source(config_lib.load(_config("unused", relative)))["model"]
    assert pinned["init_from"] == str(relative)
    assert pinned["init_from_sha256"] == hashlib.sha256(source_file.read_bytes()).hexdigest()


@pytest.mark.parametrize(("spans", "frozen", "expected"), [
    ([(0, 5, None)], 2, [(0, 2, None, True), (2, 5, None, False)]),
    ([(0, 5, None)], 0, [(0, 5, None, False)]),
    ([(3, 5, None)], 2, [(3, 5, None, False)]),  # resumed after the warm-up
    ([(1, 5, None)], 2, [(1, 2, None, True), (2, 5, None, False)]),  # resumed inside it
    ([(0, 1, (16, 16)), (1, 4, (32, 32))], 2, [(0, 1, (16, 16), True), (1, 2, (32, 32), True), (2, 4, (32, 32), False)]),
    ([(0, 3, None)], 5, [(0, 3, None, True)]),
])
def test_warmup_spans_split_the_training_where_the_warm_up_ends(spans, frozen, expected):
    assert finetune.warmup_spans(spans, frozen) == expected


def test_fastscnn_encoder_is_learning_to_downsample_and_the_global_feature_extractor():
    names = models.encoder_layer_names("fastscnn")
    built = {layer.name for layer in models.build("fastscnn", num_classes=3, input_shape=(64, 64, 3)).layers if layer.weights}
    assert names <= built
    assert {name.split("_")[0] for name in names} == {"lds", "gfe", "ppm"}
    assert {name for name in built - names if name.startswith(("lds", "gfe", "ppm"))} == set()


def test_freeze_encoder_epochs_must_not_be_negative():
    with pytest.raises(SegkitError, match="'train.freeze_encoder_epochs' must be >= 0, got -1"):
        config_lib.load({"data": {"path": "x"}, "train": {"freeze_encoder_epochs": -1}})



def test_the_frozen_warm_up_is_refused_in_one_line_outside_tensorflow(monkeypatch):
    model = models.build("unet", "resnet18", num_classes=3, input_shape=(32, 32, 3))
    cfg = config_lib.load({"data": {"path": "x"}, "model": {"encoder": "resnet18"}, "train": {"freeze_encoder_epochs": 1}})
    assert {layer.name for layer in finetune.encoder_layers(model, cfg)} == ENCODER  # TensorFlow, the tests' backend
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(SegkitError, match="^train.freeze_encoder_epochs needs the TensorFlow backend, not jax; set it to 0"):
        finetune.encoder_layers(model, cfg)


@pytest.mark.slow
def test_a_time_budget_that_runs_out_in_the_warm_up_ends_the_run_there_with_the_encoder_untouched(
        source_file, eleven_classes, tmp_path, monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(callbacks, "clock", lambda: float(next(ticks)))  # 1 s per reading: a few per step
    config = _config(eleven_classes, source_file, epochs=3, freeze_encoder_epochs=2, max_minutes=0.05)
    run = segkit.train(config, runs_dir=tmp_path, verbose=0)
    (row,) = run.state["history"]  # stopped within epoch 1 of the 3
    assert row["steps"] < row["epoch_steps"] and run.state["status"] == "finished"
    source, trained = _weights(_model(source_file)), _weights(_model(run.path / run.state["checkpoint"]))
    assert all(_same(trained[name], source[name]) for name in ENCODER)
    assert not _same(trained["decoder_stage4b_conv"], source["decoder_stage4b_conv"])
