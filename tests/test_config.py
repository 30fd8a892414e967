"""Training configs: defaults, YAML-typed --set overrides, one-line errors naming the key, the shipped configs."""

import re

import pytest
import yaml

from support import REPO
from segkit import losses, models, quickstart
from segkit.errors import SegkitError
from segkit.workflows import config


CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _write(tmp_path, text, name="my-run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_fills_defaults_and_takes_its_name_from_the_file(tmp_path):
    path = _write(tmp_path, "data: {path: some/where}\ntrain: {epochs: 7}\n")
    cfg = config.load(path)
    assert cfg["name"] == "my-run"
    assert cfg["train"]["epochs"] == 7 and cfg["train"]["batch_size"] == config.SCHEMA["train"]["batch_size"].default
    assert set(cfg) == {"name", *config.SCHEMA} and all(set(cfg[s]) == set(config.SCHEMA[s]) for s in config.SCHEMA)
    assert config.load(yaml.safe_load(config.dump(cfg))) == cfg  # a dumped config reloads to itself


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("train.epochs=3", ("train", "epochs"), 3),
        ("optimizer.learning_rate=1e-4", ("optimizer", "learning_rate"), 1e-4),  # YAML 1.1 reads this as a string
        ("optimizer.learning_rate=0.5", ("optimizer", "learning_rate"), 0.5),
        ("data.size=[64, 96]", ("data", "size"), [64, 96]),
        ("train.mixed_precision=true", ("train", "mixed_precision"), True),
        ("loss.class_weights=median", ("loss", "class_weights"), "median"),
        ("data.limit=null", ("data", "limit"), None),
        ("name=other", ("name",), "other"),
    ],
)
def test_set_overrides_take_yaml_typed_values(override, key, value):
    cfg = config.load({"data": {"path": "x", "limit": 5}}, [override])
    got = cfg[key[0]] if len(key) == 1 else cfg[key[0]][key[1]]
    assert got == value and type(got) is type(value)


def test_overrides_as_a_dict_win_over_the_file(tmp_path):
    path = _write(tmp_path, "data: {path: a}\ntrain: {epochs: 7}\n")
    assert config.load(path, {"train.epochs": 2, "data.path": "b"})["train"]["epochs"] == 2


@pytest.mark.parametrize(
    "raw, overrides, message",
    [
        ({"data": {"path": "x"}, "train": {"epoch": 3}}, None,
         r"unknown key 'train.epoch' \(did you mean 'train.epochs'\?\); valid keys in train: batch_size, epochs, "),
        ({"data": {"path": "x"}}, ["optimzer.name=sgd"], r"unknown key 'optimzer.name' \(did you mean 'optimizer'\?\)"),
        ({"dta": {"path": "x"}}, None, r"unknown section 'dta' \(did you mean 'data'\?\); valid: name, model, data"),
        ({"train": {"epochs": 3}}, None, r"missing required key 'data.path'"),
        ({"data": {"path": "x"}, "train": {"epochs": "3"}}, None, r"'train.epochs' must be int, got '3'"),
        ({"data": {"path": "x"}, "train": {"epochs": True}}, None, r"'train.epochs' must be int, got True"),
        ({"data": {"path": "x"}, "train": {"epochs": 0}}, None, r"'train.epochs' must be > 0, got 0"),
        ({"data": {"path": "x"}, "optimizer": {"name": "rmsprop"}}, None, r"'optimizer.name' is 'rmsprop'; valid: adam, adamw, sgd"),
        ({"data": {"path": "x"}, "optimizer": {"schedule": "cosine"}}, None, r"valid: constant, poly"),
        ({"data": {"path": "x"}, "train": {"distribution": "mirored"}}, None, r"did you mean 'mirrored'"),
        ({"data": {"path": "x"}, "data": {"path": "x", "size": [64]}}, None, r"'data.size' must be \[H, W\]"),
        ({"data": {"path": "x"}, "model": {"name": "unet", "aux_head": True}}, None, r"only available for pspnet"),
        ({"data": {"path": "x"}, "train": "fast"}, None, r"section 'train' must be a mapping"),
        ({"data": {"path": "x"}}, ["train.epochs"], r"expected key=value"),
        ({"data": {"path": "x"}}, ["train.epochs=[1"], r"not valid YAML"),
        ({"data": {"path": "x"}}, ["name=../x"], r"'name' must be one folder name .*got '../x'"),
        ({"data": {"path": "x"}}, ["name=a/b"], r"'name' must be one folder name .*got 'a/b'"),
        ({"data": {"path": "x"}}, ["name=.."], r"'name' must be one folder name"),
        ({"data": {"path": "x"}}, ["data.limit=-1"], r"'data.limit' must be > 0, got -1"),
        ({"data": {"path": "x"}}, ["train.steps_per_epoch=0"], r"'train.steps_per_epoch' must be > 0, got 0"),
        ({"data": {"path": "x"}}, ["augment.hflip=1.5"], r"'augment.hflip' must be in \[0, 1\] .*got 1.5"),
        ({"data": {"path": "x"}}, ["augment.hflip=-0.1"], r"'augment.hflip' must be in \[0, 1\] .*got -0.1"),
        ({"data": {"path": "x"}}, ["augment.color_jitter=1"], r"'augment.color_jitter' must be in \[0, 1\), got 1"),
        ({"data": {"path": "x"}}, ["augment.color_jitter=-0.2"], r"'augment.color_jitter' must be in \[0, 1\), got -0.2"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors_naming_them(raw, overrides, message):
    with pytest.raises(SegkitError, match=message) as err:
        config.load(raw, overrides)
    assert "\n" not in str(err.value)


def test_unknown_model_encoder_and_loss_names_list_the_valid_ones_from_their_modules():
    with pytest.raises(SegkitError, match=f"'model.name' is 'unte' \\(did you mean 'unet'\\?\\); valid: {', '.join(models.available())}"):
        config.load({"data": {"path": "x"}, "model": {"name": "unte"}})
    with pytest.raises(SegkitError, match="'model.encoder' is 'vgg16'; valid: resnet18, resnet34, resnet50"):
        config.load({"data": {"path": "x"}, "model": {"encoder": "vgg16"}})
    with pytest.raises(SegkitError, match=re.escape(f"valid: {', '.join(losses.LOSS_NAMES)}")):
        config.load({"data": {"path": "x"}, "loss": {"name": "lovasz"}})


@pytest.mark.parametrize("text, message", [("", "is empty"), ("- a\n- b\n", "must be a mapping"), ("a: [1\n", "not valid YAML")])
def test_unreadable_config_files(tmp_path, text, message):
    with pytest.raises(SegkitError, match=message):
        config.load(_write(tmp_path, text))
    with pytest.raises(SegkitError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid_and_named_for_what_they_are(path):
    cfg = config.load(path)
    model, dataset, size, *budget = path.stem.split("_")
    name, encoder = cfg["model"]["name"], cfg["model"]["encoder"]
    assert model == (name if encoder == name else f"{name}-r{encoder.removeprefix('resnet')}")
    assert not budget or budget == [f"cpu-{cfg['train']['max_minutes']:g}min"]
    assert size == "x".join(map(str, cfg["data"]["size"]))
    assert dataset.startswith("synthetic" if cfg["data"]["path"].endswith("synthetic") else cfg["data"]["format"])


def _config_names_in(paths) -> set[str]:
    """Every config file name (the `<model>-r<depth>_<data>_<H>x<W>.yaml` pattern) mentioned in these files."""
    pattern = re.compile(r"[a-z0-9]+-r\d+_[a-z0-9-]+_\d+x\d+\.yaml")
    return {name for path in paths for name in pattern.findall(path.read_text(errors="replace"))}


def test_every_config_the_docs_notebooks_and_code_name_exists_and_loads():
    documents = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "notebooks").glob("*.ipynb"),
                 *(REPO / "benchmarks").glob("*"), *(REPO / "segkit").rglob("*.py")]
    named = _config_names_in(p for p in documents if p.is_file())
    assert len(named) >= 3, named  # the scan found the documented commands at all
    for name in sorted(named | set(quickstart.QUICKSTART_MODELS)):
        assert (REPO / "configs" / name).is_file(), f"{name} is named but configs/{name} does not exist"
        config.load(REPO / "configs" / name)
