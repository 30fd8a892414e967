"""Training configs: defaults, YAML-typed --set overrides, one-line errors naming the key, base files, the shipped configs."""

import inspect
import re

import pytest
import yaml

from support import REPO
from segkit import losses, models, quickstart
from segkit.errors import SegkitError
from segkit.workflows import config


CONFIGS = config.shipped()


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
        ("train.mixed_precision=bfloat16", ("train", "mixed_precision"), "bfloat16"),
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
        ({"data": {"path": "x", "size": [64]}}, None, r"'data.size' must be \[H, W\]"),
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
        ({"data": {"path": "x", "format": "camvid", "max_color_distance": 50}}, None,
         r"'data.max_color_distance' decodes raw cityscapes-pairs colour labels \(data.format cityscapes-pairs or "
         r"synthetic\); data.format is camvid$"),
        ({"data": {"path": "x", "max_color_distance": 50}}, None, r"data.format is null \(a prepared dataset, its labels"),
        ({"data": {"path": "x", "format": "cityscapes-pairs"}}, ["data.max_color_distance=-1"],
         r"'data.max_color_distance' must be > 0, got -1"),
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


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_resolve_validate_and_are_named_for_what_they_are(name):
    cfg = config.load(name)
    assert cfg["name"] == name and config.BASE_KEY not in cfg
    # <model>[-r<depth>]_<data>_<H>x<W>[_cpu-<N>min]; the model part may hold an underscore itself (pspnet_sm)
    model, dataset, size, *budget = re.fullmatch(r"(.+)_([a-z0-9-]+)_(\d+x\d+)(?:_(cpu-\d+min))?", name).groups()
    budget = [part for part in budget if part]
    model_name, encoder = cfg["model"]["name"], cfg["model"]["encoder"]
    assert model == (model_name if encoder == model_name else f"{model_name}-r{encoder.removeprefix('resnet')}")
    assert not budget or budget == [f"cpu-{cfg['train']['max_minutes']:g}min"]
    assert size == "x".join(map(str, cfg["data"]["size"]))
    assert dataset.startswith(cfg["data"]["format"])
    assert config.describe(name) and "\n" not in config.describe(name)


def _config_names_in(paths) -> set[str]:
    """Every shipped-config name (`<model>[-r<depth>]_<data>_<H>x<W>[_cpu-<N>min]`) mentioned in these files."""
    pattern = re.compile(r"\b(?:[a-z0-9]+(?:_[a-z0-9]+)?-r\d+|fastscnn|bisenetv2)_[a-z0-9-]+_\d+x\d+(?:_cpu-\d+min)?\b")
    return {name for path in paths for name in pattern.findall(path.read_text(errors="replace"))}


def test_every_config_the_docs_notebooks_and_code_name_exists_and_loads():
    documents = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "notebooks").glob("*.ipynb"),
                 *(REPO / "benchmarks").glob("*"), *(REPO / "segkit").rglob("*.py")]
    named = _config_names_in(p for p in documents if p.is_file())
    assert len(named) >= 3, named  # the scan found the documented commands at all
    for name in sorted(named | set(quickstart.QUICKSTART_MODELS)):
        assert name in CONFIGS, f"{name} is named but is not a shipped config"
        config.load(name)


def test_the_configs_the_issue_names_exist():
    for model in ("unet", "pspnet", "deeplabv3plus"):
        assert f"{model}-r34_cityscapes-pairs_256x256" in CONFIGS
    assert {"unet-r34_synthetic_128x128", "pspnet-r34_synthetic_128x128"} <= set(CONFIGS)
    assert any("camvid" in n for n in CONFIGS)


# What unet-r34_cityscapes-pairs_256x256.yaml said, written out in full, before its blocks moved into base files.
UNET_CITYSCAPES_PAIRS = {
    "name": "unet-r34_cityscapes-pairs_256x256",
    "model": {"name": "unet", "encoder": "resnet34", "encoder_weights": "imagenet"},
    "data": {"path": "data/cityscapes-pairs", "format": "cityscapes-pairs", "split": "train", "val_split": "val", "size": [256, 256]},
    "train": {"batch_size": 8, "epochs": 40, "seed": 0},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-3, "schedule": "poly"},
    "loss": {"name": "ce+dice"},
    "augment": {"hflip": 0.5, "scale": [0.75, 1.25], "color_jitter": 0.2},
}


def test_a_shipped_config_resolves_to_what_it_said_before_it_had_base_files():
    assert config.load("unet-r34_cityscapes-pairs_256x256") == config.load(UNET_CITYSCAPES_PAIRS)


def test_shipped_configs_are_found_by_name_with_or_without_yaml_and_by_path():
    by_path = config.load(config.SHIPPED / "pspnet-r34_synthetic_128x128.yaml")
    assert config.load("pspnet-r34_synthetic_128x128") == config.load("pspnet-r34_synthetic_128x128.yaml") == by_path
    assert by_path["model"]["name"] == "pspnet" and by_path["data"]["format"] == "synthetic"


def test_a_local_file_wins_over_a_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "data: {path: mine}\n", name="unet-r34_synthetic_128x128.yaml")
    assert config.load("unet-r34_synthetic_128x128.yaml")["data"]["path"] == "mine"


def test_unknown_config_name_is_one_line_with_close_matches():
    with pytest.raises(SegkitError, match=r"unknown config 'unet-r34_synthetc_128x128' \(did you mean unet-r34_synthetic_128x128") as err:
        config.load("unet-r34_synthetc_128x128")
    assert "\n" not in str(err.value)


def test_bases_deep_merge_in_order_later_wins_and_the_file_wins_over_all(tmp_path):
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base", "_base_: root.yaml\ntrain: {epochs: 5, batch_size: 2}\naugment: {scale: [1, 1]}\n", name="a.yaml")
    _write(tmp_path / "base", "train: {epochs: 1, seed: 9}\ndata: {path: from-root, val: 3}\n", name="root.yaml")
    _write(tmp_path / "base", "train: {epochs: 6}\naugment: {scale: [0.5, 2.0], hflip: 0.0}\n", name="b.yaml")
    path = _write(tmp_path, "_base_: [base/a.yaml, base/b.yaml]\ndata: {path: mine}\ntrain: {batch_size: 4}\n", name="leaf.yaml")
    expected = config.defaults()
    expected["name"] = "leaf"
    expected["data"].update(path="mine", val=3)
    expected["train"].update(epochs=6, batch_size=4, seed=9)
    expected["augment"].update(scale=[0.5, 2.0], hflip=0.0)
    expected["model"]["encoder"] = "resnet34"  # a null encoder resolves to the model's default
    assert config.load(path) == expected


def test_a_dict_config_may_extend_base_files_relative_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "data: {path: shared}\ntrain: {epochs: 2}\n", name="base.yaml")
    cfg = config.load({"_base_": ["base.yaml"], "train": {"epochs": 3}})
    assert (cfg["data"]["path"], cfg["train"]["epochs"]) == ("shared", 3)


def test_base_cycles_and_missing_bases_are_one_line_errors_naming_the_file(tmp_path):
    _write(tmp_path, "_base_: b.yaml\ndata: {path: x}\n", name="a.yaml")
    _write(tmp_path, "_base_: [c.yaml]\n", name="b.yaml")
    _write(tmp_path, "_base_: [a.yaml]\n", name="c.yaml")
    with pytest.raises(SegkitError, match=r"a.yaml: _base_ files form a cycle \(a.yaml -> b.yaml -> c.yaml -> a.yaml\)") as err:
        config.load(tmp_path / "a.yaml")
    assert "\n" not in str(err.value)
    missing = _write(tmp_path, "_base_: [nope/x.yaml]\ndata: {path: x}\n", name="d.yaml")
    with pytest.raises(SegkitError, match=r"d.yaml: base file nope/x.yaml does not exist"):
        config.load(missing)
    bad = _write(tmp_path, "_base_: {a: 1}\ndata: {path: x}\n", name="e.yaml")
    with pytest.raises(SegkitError, match=r"e.yaml: '_base_' must be a file name or a list of them"):
        config.load(bad)


def test_synthetic_data_needs_no_path_and_mixed_precision_takes_auto():
    cfg = config.load({"data": {"format": "synthetic"}, "train": {"mixed_precision": "auto"}})
    assert cfg["data"]["path"] is None and cfg["train"]["mixed_precision"] == "auto"
    with pytest.raises(SegkitError, match=r"'train.mixed_precision' must be true, false, bfloat16 or auto, got 'yes'"):
        config.load({"data": {"path": "x"}, "train": {"mixed_precision": "yes"}})


def test_segkit_configs_lists_every_shipped_config_with_what_it_is(capsys):
    from segkit import cli

    assert cli.main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines[: len(CONFIGS)]}
    assert sorted(listed) == CONFIGS and "_base_" not in " ".join(listed)
    assert listed["unet-r34_synthetic_128x128"].startswith("U-Net-R34 on the built-in synthetic city")


SHIPPED_SYNTHETIC = "unet-r34_synthetic_128x128"


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.val=1.5", r"'data.val' is a share below 1 \(0.1\) or a whole number of items \(20\), got 1.5"),
        ("train.max_minutes=-1", r"'train.max_minutes' must be > 0, got -1"),
        ("train.max_minutes=0", r"'train.max_minutes' must be > 0, got 0"),
        ("optimizer.learning_rate=.nan", r"'optimizer.learning_rate' must be a finite number, got nan"),
        ("optimizer.learning_rate=.inf", r"'optimizer.learning_rate' must be a finite number, got inf"),
        ("optimizer.learning_rate=-0.01", r"'optimizer.learning_rate' must be > 0, got -0.01"),
        ("train.batch_size=0", r"'train.batch_size' must be > 0, got 0"),
        ("data.size=[7,7]", r"'data.size' 7x7 is not a multiple of 32, which model unet needs"),
        ("augment.scale=[{class_name: ExponentialDecay, config: {}}, 2]", r"'augment.scale' must be a list of numbers"),
    ],
)
def test_a_bad_override_is_refused_in_one_line_blamed_on_the_override_not_the_file(override, message):
    path = config.find(SHIPPED_SYNTHETIC)
    with pytest.raises(SegkitError) as err:
        config.load(path, [override])
    text = str(err.value)
    key = override.partition("=")[0]
    assert text.startswith(f"--set {key}=") and str(path) not in text and "\n" not in text
    assert re.search(message, text), text


def test_a_bad_value_written_in_the_file_is_blamed_on_the_file_even_beside_overrides(tmp_path):
    path = _write(tmp_path, "data: {path: x, val: 2.5}\naugment: {scale: [{class_name: X}, 1]}\n")
    with pytest.raises(SegkitError, match=rf"^{re.escape(str(path))}: 'data.val' is a share below 1"):
        config.load(path, ["train.epochs=3", "augment.scale=[1, 1]"])
    with pytest.raises(SegkitError, match=rf"^{re.escape(str(path))}: 'augment.scale' must be a list of numbers"):
        config.load(path, ["data.val=3"])


@pytest.mark.parametrize("val", [0.25, 20, 20.0])
def test_a_validation_share_below_1_or_a_whole_count_is_accepted(val):
    assert config.load({"data": {"path": "x", "val": val}})["data"]["val"] == val


@pytest.mark.parametrize("name", ["pspnet", "bisenetv2", "fastscnn"])
def test_aux_head_is_accepted_for_the_models_that_build_auxiliary_heads(name):
    cfg = config.load({"data": {"path": "x"}, "model": {"name": name, "encoder": None, "aux_head": True}})
    assert cfg["model"]["aux_head"] is True
    assert "aux_head" in inspect.signature(models.MODELS[name]).parameters  # the builder takes what validation lets through


def test_detail_head_is_fastscnns_only():
    assert config.load({"data": {"path": "x"}, "model": {"name": "fastscnn", "detail_head": True}})["model"]["detail_head"]
    with pytest.raises(SegkitError, match=r"'model.detail_head' is only available for fastscnn, not 'bisenetv2'"):
        config.load({"data": {"path": "x"}, "model": {"name": "bisenetv2", "encoder": None, "detail_head": True}})


def test_a_data_size_the_model_cannot_take_is_refused_before_any_data_is_generated_or_prepared(tmp_path):
    import segkit

    cache = tmp_path / "cache"
    with pytest.raises(SegkitError, match=r"^--set data.size=\[7, 7\]: 'data.size' 7x7 is not a multiple of 32"):
        segkit.train(SHIPPED_SYNTHETIC, overrides=["data.size=[7,7]", f"data.cache={cache}"], runs_dir=tmp_path / "runs")
    assert not cache.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("val", [0, 0.0])
def test_data_val_0_trains_on_every_item_and_a_negative_share_or_count_is_refused(val):
    assert config.load({"data": {"path": "x", "val": val}})["data"]["val"] == 0
    for bad in (-1, -0.1):
        with pytest.raises(SegkitError, match=rf"'data.val' must be >= 0 \(0 trains on every item without validation\), got {bad}"):
            config.load({"data": {"path": "x", "val": bad}})
    with pytest.raises(SegkitError, match=r"'data.val' is a share below 1 \(0.1\) or a whole number of items \(20\), got 2.5"):
        config.load({"data": {"path": "x", "val": 2.5}})


def test_the_all_pairs_fastscnn_recipe_is_the_held_out_recipe_trained_on_every_pair():
    held_out = config.load("fastscnn_cityscapes-pairs_256x256_cpu-35min")
    every_pair = config.load("fastscnn_cityscapes-pairs-all_256x256_cpu-35min")
    assert (held_out["data"]["val"], held_out["data"]["val_split"]) == (300, None)
    expected = {**held_out, "name": "fastscnn_cityscapes-pairs-all_256x256_cpu-35min",
                "data": {**held_out["data"], "val": 0}}
    assert every_pair == expected
