"""Training configs: YAML files with a fixed set of keys, `--set key=value` overrides, one-line errors.

A config has sections (`model`, `data`, `train`, `optimizer`, `loss`, `augment`); every key has
a default except `data.path` (which a synthetic dataset does without). Misspelt or unknown keys and
names are errors that list the valid ones, so a typo never silently falls back to a default.

A config file may extend base files (`_base_: [a.yaml, b.yaml]`, paths relative to the file, as in
mmseg): they are deep-merged in order, later ones winning, and the file itself wins over them all.
The configs segkit ships (segkit/configs/) are also found by name: `load("unet-r34_synthetic_128x128")`.
"""

import copy
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from segkit.data import FORMATS as READER_FORMATS
from segkit.errors import SegkitError

SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # package data: travels with the wheel
BASE_KEY = "_base_"
SYNTHETIC = "synthetic"  # data.format of the built-in synthetic city, generated on first use
DATA_FORMATS = (*READER_FORMATS, SYNTHETIC)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "poly", "onecycle")
SPANS = ("auto", "epochs", "budget")
JIT_COMPILE = ("auto", True, False)
CLASS_WEIGHTS = ("median", "inverse")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker_mirrored", "data_parallel")


def _model_names():
    from segkit import models  # imported when checked: reading a config stays light

    return tuple(models.available())


def _encoder_names():
    from segkit import models

    return tuple(dict.fromkeys([*models.ENCODERS, *models.OWN_ENCODER.values()]))  # shared encoders first


def _loss_names():
    from segkit import losses

    return tuple(losses.LOSS_NAMES)


def _dice_classes():
    from segkit import losses

    return losses.DICE_CLASSES


@dataclass(frozen=True)
class Field:
    default: object
    types: tuple
    help: str
    choices: tuple | Callable | None = None  # a callable asks the module that owns the names
    nullable: bool = False


_STR, _INT, _FLOAT, _BOOL, _LIST = (str,), (int,), (float, int), (bool,), (list,)

SCHEMA: dict[str, dict[str, Field]] = {
    "model": {
        "name": Field("unet", _STR, "architecture", _model_names),
        "encoder": Field(None, _STR, "encoder (resnet18/34/50, mobilenetv3_large/small); null: the model's default (resnet34, or Fast-SCNN's and BiSeNetV2's own)", _encoder_names,
                         nullable=True),
        "encoder_weights": Field(None, _STR, "'imagenet' or a path to resnetXX_imagenet_1000_no_top.h5 (MobileNetV3: 'imagenet' only)", nullable=True),
        "aux_head": Field(False, _BOOL, "auxiliary heads, dropped for inference: PSPNet's on stage 3 (loss weight 0.4), BiSeNetV2's four booster heads (1 each), Fast-SCNN's two FCN heads at strides 8 and 32 (0.4 each)"),
        "detail_head": Field(False, _BOOL, "Fast-SCNN only: STDC's detail head on the stride-8 features, trained on the "
                             "label's Laplacian boundaries with binary cross-entropy + Dice (loss weight 1), dropped for inference"),
        "bn_momentum": Field(None, _FLOAT, "momentum of every BatchNormalization layer (e.g. 0.9 so a short run's moving "
                             "statistics catch up); null keeps the model's", nullable=True),
        "init_from": Field(None, _STR, "a run folder (its best.keras) or a .keras model whose layers of the same name and "
                           "weight shapes start this model; the others (e.g. a head for another class count) start afresh",
                           nullable=True),
        "init_from_sha256": Field(None, _STR, "sha256 of the model.init_from file: written by training; when given, "
                                  "a file with another digest is refused", nullable=True),
    },
    "data": {
        "path": Field(None, _STR, "a prepared dataset (folder with manifest.json) or a raw dataset folder with data.format; "
                      "for data.format synthetic, where the pairs are generated (default: inside data.cache)", nullable=True),
        "format": Field(None, _STR, "raw dataset format; prepared once into data.cache. synthetic: the built-in city, "
                        "generated on first use", DATA_FORMATS, nullable=True),
        "count": Field(160, _INT, "synthetic pairs to generate (data.format synthetic)"),
        "seed": Field(0, _INT, "seed of the synthetic city (data.format synthetic); the same seed gives the same pairs"),
        "split": Field(None, _STR, "split to read from a raw layout with several (train, val, test)", nullable=True),
        "classes": Field("train", _STR, "'train', 'all' or a classes file (folder format), as in `segkit data prepare`"),
        "size": Field(None, _LIST, "input size [H, W]; raw data is prepared at it, prepared data must have it", nullable=True),
        "max_color_distance": Field(None, _FLOAT, "cityscapes-pairs: how far (RGB units) a label pixel may be from its "
                                    "nearest palette colour and keep its class; farther pixels (JPEG-blurred edges) "
                                    "are ignored. null: 30 (docs/data.md)", nullable=True),
        "val": Field(0.1, _FLOAT, "hold-out validation share (< 1) or count (>= 1) of data.path, when no val_path/val_split; "
                     "0 trains on every item without validation and keeps the final weights as best.keras (with a "
                     "learning rate that decays to its end, the last weights are the ones to keep)"),
        "val_path": Field(None, _STR, "a separate validation dataset (prepared, or raw in data.format)", nullable=True),
        "val_split": Field(None, _STR, "validation split of the raw layout (e.g. val), read from val_path or path", nullable=True),
        "limit": Field(None, _INT, "use only the first N items of data.path (smoke runs)", nullable=True),
        "cache": Field("data/prepared", _STR, "where raw datasets are prepared"),
    },
    "train": {
        "batch_size": Field(8, _INT, "global batch size"),
        "epochs": Field(20, _INT, "number of epochs"),
        "steps_per_epoch": Field(None, _INT, "cap on training steps per epoch", nullable=True),
        "max_minutes": Field(None, _FLOAT, "time budget: training stops after the step that reaches it, and that last, partial epoch is validated and saved; "
                                         "no epoch starts with less time left than a step", nullable=True),
        "seed": Field(0, _INT, "seed for weights, split, shuffling and augmentation"),
        "precise_bn": Field(10, _INT, "training batches (un-augmented) from which BatchNorm statistics are re-estimated "
                            "before each validation and save; 0 keeps the moving averages (stale on short runs)"),
        "mixed_precision": Field(False, (bool, str), "float16 compute (true) or bfloat16 compute (bfloat16), logits stay "
                                 "float32; auto: float16 on a GPU, bfloat16 on a CPU with AVX512-BF16 or AMX, else off"),
        "jit_compile": Field("auto", (str, bool), "XLA compilation of the train step: auto (Keras decides), true or false"),
        "label_stride": Field(1, _INT, "k > 1: training scores loss and metrics on every k-th pixel of each row and column, "
                              "against logits upsampled to 1/k of the input (a cheaper step for models that end in an "
                              "upsampling: fastscnn, pspnet, deeplabv3plus, bisenetv2); loss.ohem_min_kept counts full-size "
                              "pixels (divided by k^2); saved models, evaluation and predictions stay at full size"),
        "threads": Field(None, _INT, "CPU threads of each TensorFlow op (intra-op; inter-op gets 1); null: all cores. "
                         "Applied only while TensorFlow has not started, i.e. in a fresh process", nullable=True),
        "progressive": Field(None, _LIST, "progressive resizing: [[epoch, [H, W]], ...] trains from each 1-based epoch on "
                             "random crops of that size (the last stage should be the full size); null: off", nullable=True),
        "distribution": Field("none", _STR, "data-parallel training: mirrored (local devices, TensorFlow), "
                              "multi_worker_mirrored (machines in TF_CONFIG, TensorFlow), data_parallel (local devices, JAX)", DISTRIBUTIONS),
        "class_uniform": Field(0.0, _FLOAT, "share of each epoch's draws that pick a class uniformly at random, then an "
                               "image holding it (at least 1/256 of its pixels), so rare classes come round more often "
                               "(NVIDIA's class_uniform_pct, Zhu et al. 2019); the rest is a plain shuffle. 0: every image once an epoch"),
        "freeze_encoder_epochs": Field(0, _INT, "warm-up: the first N epochs train with the encoder frozen (weights and "
                                       "BatchNorm statistics), then everything trains; 0: off"),
    },
    "optimizer": {
        "name": Field("adam", _STR, "optimizer", OPTIMIZERS),
        "learning_rate": Field(1e-3, _FLOAT, "initial learning rate"),
        "schedule": Field("constant", _STR, "learning-rate schedule over optimizer.span: poly: lr * (1 - t)^power; "
                          "onecycle: from lr/25 up over the warm-up, cosine down to 0", SCHEDULES),
        "span": Field("auto", _STR, "what the poly/onecycle decay spans: epochs: train.epochs x steps per epoch (exact under "
                      "resume); budget: ends at the step where train.max_minutes runs out, its length re-estimated from the "
                      "measured step time (at most train.epochs); auto: budget when train.max_minutes is set", SPANS),
        "warmup": Field(0.0, _FLOAT, "share of train.epochs x steps per epoch spent on a linear warm-up to learning_rate (0: none)"),
        "power": Field(0.9, _FLOAT, "exponent of the poly schedule"),
        "weight_decay": Field(None, _FLOAT, "decoupled weight decay (adamw, sgd)", nullable=True),
        "momentum": Field(0.9, _FLOAT, "SGD momentum"),
        "nesterov": Field(False, _BOOL, "Nesterov momentum (sgd)"),
        "ema": Field(None, _FLOAT, "momentum of an exponential moving average of the weights (e.g. 0.999), used for validation, "
                     "best.keras and the metrics; null: off", nullable=True),
    },
    "loss": {
        "name": Field("ce", _STR, "loss", _loss_names),
        "class_weights": Field(None, _STR, "weights from the training data's class pixel share", CLASS_WEIGHTS, nullable=True),
        "ohem_threshold": Field(0.7, _FLOAT, "ohem: pixels whose true-class probability is below it are kept (mmseg's OHEMPixelSampler)"),
        "ohem_min_kept": Field(10000, _INT, "ohem: at least this many of the hardest labelled pixels per image are kept"),
        "lovasz_bins": Field(None, _INT, "lovasz: group each class's errors into this many bins instead of sorting them "
                             "(within 1/bins of the sorted loss, far cheaper on a CPU); null: sort", nullable=True),
        "dice_classes": Field("all", _STR, "dice: average soft Dice over all classes, or only those present in the batch's "
                              "labels (as Lovasz-softmax does), so a class the batch lacks is not pushed towards zero",
                              _dice_classes),
    },
    "augment": {
        "enabled": Field(True, _BOOL, "augment training batches"),
        "hflip": Field(0.5, _FLOAT, "horizontal flip probability"),
        "scale": Field([0.75, 1.25], _LIST, "random zoom range [min, max]; [1, 1] turns it off"),
        "crop": Field(None, _LIST, "random crop [H, W] taken after the zoom (padded with ignore where the zoomed image is "
                      "smaller); the model is then built for any input size; null: the data's size", nullable=True),
        "color_jitter": Field(0.2, _FLOAT, "brightness/contrast/saturation jitter strength (image only)"),
    },
}
TOP_LEVEL = ("name",) + tuple(SCHEMA)
REQUIRED = ("data.path",)  # data.path may be left out when data.format is synthetic


def defaults() -> dict:
    """A config with every key at its default (data.path still None)."""
    return {"name": None, **{s: {k: copy.deepcopy(f.default) for k, f in fields.items()} for s, fields in SCHEMA.items()}}


def load(source, overrides=None) -> dict:
    """Reads a config (a YAML path, the name of a shipped config, or a dict), resolves its `_base_` files,
    applies `overrides` ({"train.epochs": 3} or ["train.epochs=3"]) and validates.

    Returns the resolved config: every key present, no `_base_`, `name` set (file stem when not given).
    """
    if isinstance(source, dict):
        where, raw = "config", _resolve_bases(copy.deepcopy(source), Path.cwd(), ())
    else:
        source = find(source)
        where, raw = str(source), _read_resolved(source, ())
    config = defaults()
    _merge(config, raw, where)
    overridden = _parse_overrides(overrides)
    for key, value in overridden.items():
        _set(config, key, value, "--set")
    if config["name"] is None:
        config["name"] = Path(source).stem if not isinstance(source, dict) else "run"
    try:
        validate(config, where)
    except SegkitError as err:
        raise _blamed_on_override(err, where, overridden) from None
    return config


def _blamed_on_override(err: SegkitError, where: str, overridden: dict) -> SegkitError:
    """The error with `where` (the config file) replaced by `--set key=value` when that override set the bad key.

    Every validation message starts "<where>: '<key>'", naming the key it refuses.
    """
    message = str(err)
    named = re.match(re.escape(where) + r": '([\w.]+)'", message)
    if named is None or named.group(1) not in overridden:
        return err
    key = named.group(1)
    value = yaml.safe_dump(overridden[key], default_flow_style=True, width=math.inf).strip().removesuffix("...").strip()
    return SegkitError(f"--set {key}={value}{message[len(where):]}")


def find(source) -> Path:
    """The config file `source` names: an existing path, else the shipped config of that name (with or without .yaml)."""
    path = Path(source)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if path.name == str(source) and (SHIPPED / f"{name}.yaml").is_file():
        return SHIPPED / f"{name}.yaml"
    if path.name != str(source) or path.suffix:  # looks like a path: say which file is missing
        raise SegkitError(f"config file {path} does not exist")
    close = difflib.get_close_matches(name, shipped(), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise SegkitError(f"unknown config {name!r}{hint}: give a YAML path or a shipped name (`segkit configs` lists them)")


def shipped() -> list[str]:
    """Names of the configs segkit ships, sorted."""
    return sorted(path.stem for path in SHIPPED.glob("*.yaml"))


def describe(name: str) -> str:
    """What a shipped config is: the first line of its leading comment."""
    for line in (SHIPPED / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def dump(config: dict) -> str:
    """The resolved config as YAML text, sections in schema order."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def parse_override(text: str) -> tuple[str, object]:
    """'train.epochs=3' -> ('train.epochs', 3): the value is read as YAML (numbers, booleans, null, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SegkitError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=3")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise SegkitError(f"--set {text!r}: the value is not valid YAML ({err.problem})") from None


def validate(config: dict, where: str = "config") -> None:
    """Checks types, choices and required keys; raises SegkitError naming the first bad key."""
    for key in REQUIRED:
        section, name = key.split(".")
        if config[section][name] is None and config["data"]["format"] != SYNTHETIC:
            raise SegkitError(f"{where}: missing required key '{key}' ({SCHEMA[section][name].help})")
    if not isinstance(config["name"], str) or not config["name"]:
        raise SegkitError(f"{where}: 'name' must be a non-empty string, got {config['name']!r}")
    if config["name"] in (".", "..") or any(sep in config["name"] for sep in "/\\"):
        # The run folder is runs_dir/<name>-<time>: a separator or '..' would put it elsewhere.
        raise SegkitError(f"{where}: 'name' must be one folder name (no '/', '\\', '.' or '..'), got {config['name']!r}")
    for section, fields in SCHEMA.items():
        for name, field in fields.items():
            config[section][name] = _checked(f"{section}.{name}", config[section][name], field, where)
    _check_ranges(config, where)


def _parse_overrides(overrides) -> dict:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return dict(parse_override(item) for item in overrides)


def _read_resolved(path: Path, chain: tuple) -> dict:
    """The raw mapping of a config file with its base files merged in (`chain`: the files extending it, for cycles)."""
    key = path.resolve()
    if key in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(key):], key))
        raise SegkitError(f"config file {path}: {BASE_KEY} files form a cycle ({cycle})")
    return _resolve_bases(_read_yaml(path), path.parent, (*chain, key), where=path)


def _resolve_bases(raw: dict, folder: Path, chain: tuple, where="config") -> dict:
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SegkitError(f"{where}: '{BASE_KEY}' must be a file name or a list of them, got {bases!r}")
    merged = {}
    for base in bases:
        path = folder / base
        if not path.is_file():
            raise SegkitError(f"{where}: base file {base} does not exist (looked for {path})")
        merged = _deep_merge(merged, _read_resolved(path, chain))
    return _deep_merge(merged, raw)


def _deep_merge(base: dict, update: dict) -> dict:
    """`update` over `base`: mappings merge key by key, anything else (lists too) is replaced."""
    merged = dict(base)
    for key, value in update.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both_maps else copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SegkitError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SegkitError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if raw is None:
        raise SegkitError(f"config file {path} is empty")
    if not isinstance(raw, dict):
        raise SegkitError(f"config file {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _merge(config: dict, raw: dict, where: str) -> None:
    for section, value in raw.items():
        if section not in TOP_LEVEL:
            raise SegkitError(f"{where}: unknown section '{section}'{_suggest(section, TOP_LEVEL)}; valid: {', '.join(TOP_LEVEL)}")
        if section == "name":
            config["name"] = value
            continue
        if not isinstance(value, dict):
            raise SegkitError(f"{where}: section '{section}' must be a mapping of keys, got {value!r}")
        for name, item in value.items():
            _set(config, f"{section}.{name}", item, where)


def _set(config: dict, key: str, value, where: str) -> None:
    if key == "name":
        config["name"] = value
        return
    section, _, name = key.partition(".")
    if section not in SCHEMA:
        raise SegkitError(f"{where}: unknown key '{key}'{_suggest(section, TOP_LEVEL)}; sections: {', '.join(TOP_LEVEL)}")
    if name not in SCHEMA[section]:
        valid = SCHEMA[section]
        raise SegkitError(f"{where}: unknown key '{key}'{_suggest(name, valid, section)}; valid keys in {section}: {', '.join(valid)}")
    config[section][name] = value


def _suggest(word: str, options, section: str | None = None) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    if not close:
        return ""
    return f" (did you mean '{section + '.' if section else ''}{close[0]}'?)"


def _checked(key: str, value, field: Field, where: str):
    if value is None:
        if field.nullable:
            return None
        raise SegkitError(f"{where}: '{key}' must not be empty ({field.help})")
    if field.types == _FLOAT and isinstance(value, str):
        value = _float_or_text(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    wrong_bool = isinstance(value, bool) and bool not in field.types  # bool is an int subclass
    if wrong_bool or not isinstance(value, field.types):
        expected = " or ".join(t.__name__ for t in field.types)
        raise SegkitError(f"{where}: '{key}' must be {expected}, got {value!r} ({field.help})")
    if field.types == _FLOAT and not math.isfinite(value):
        raise SegkitError(f"{where}: '{key}' must be a finite number, got {value!r} ({field.help})")
    if field.types == _LIST and not _plain_list(value):
        # A mapping in a list would reach code that expects numbers (or a deserializer that builds objects from it).
        raise SegkitError(f"{where}: '{key}' must be a list of numbers (or of such lists), got {value!r} ({field.help})")
    choices = field.choices() if callable(field.choices) else field.choices
    if choices and value not in choices:
        raise SegkitError(f"{where}: '{key}' is {value!r}{_suggest(value, choices)}; valid: {', '.join(choices)}")
    return value


def _plain_list(value: list) -> bool:
    return all(_plain_list(item) if isinstance(item, list) else isinstance(item, (int, float)) and not isinstance(item, bool)
               for item in value)


def _float_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _check_ranges(config: dict, where: str) -> None:
    data, train, augment = config["data"], config["train"], config["augment"]
    positive = {"train.batch_size": train["batch_size"], "train.epochs": train["epochs"],
                "train.steps_per_epoch": train["steps_per_epoch"], "data.limit": data["limit"],
                "data.max_color_distance": data["max_color_distance"],
                "train.max_minutes": train["max_minutes"], "optimizer.learning_rate": config["optimizer"]["learning_rate"]}
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise SegkitError(f"{where}: '{key}' must be > 0, got {value!r}")
    if not 0 <= augment["hflip"] <= 1:
        raise SegkitError(f"{where}: 'augment.hflip' must be in [0, 1] (a probability), got {augment['hflip']!r}")
    if not 0 <= augment["color_jitter"] < 1:
        raise SegkitError(f"{where}: 'augment.color_jitter' must be in [0, 1), got {augment['color_jitter']!r}")
    if data["size"] is not None and not (len(data["size"]) == 2 and all(isinstance(v, int) and v > 0 for v in data["size"])):
        raise SegkitError(f"{where}: 'data.size' must be [H, W] with positive integers, got {data['size']!r}")
    if not data["val"] >= 0:
        raise SegkitError(f"{where}: 'data.val' must be >= 0 (0 trains on every item without validation), got {data['val']!r}")
    if data["val"] >= 1 and not float(data["val"]).is_integer():
        raise SegkitError(f"{where}: 'data.val' is a share below 1 (0.1) or a whole number of items (20), got {data['val']!r}")
    _check_size_fits_model(config, where)
    if not (len(augment["scale"]) == 2 and 0 < augment["scale"][0] <= augment["scale"][1]):
        raise SegkitError(f"{where}: 'augment.scale' must be [min, max] with 0 < min <= max, got {augment['scale']!r}")
    if train["max_minutes"] is not None and train["distribution"] == "multi_worker_mirrored":
        raise SegkitError(f"{where}: 'train.max_minutes' cannot be used with train.distribution=multi_worker_mirrored: "
                          "each worker's clock would stop it at a different step; limit train.epochs instead")
    if isinstance(train["mixed_precision"], str) and train["mixed_precision"] not in ("auto", "bfloat16"):
        raise SegkitError(f"{where}: 'train.mixed_precision' must be true, false, bfloat16 or auto, "
                          f"got {train['mixed_precision']!r}")
    if not 0 <= train["class_uniform"] <= 1:
        raise SegkitError(f"{where}: 'train.class_uniform' must be a share in [0, 1], got {train['class_uniform']!r}")
    if train["precise_bn"] < 0:
        raise SegkitError(f"{where}: 'train.precise_bn' must be >= 0, got {train['precise_bn']!r}")
    if train["freeze_encoder_epochs"] < 0:
        raise SegkitError(f"{where}: 'train.freeze_encoder_epochs' must be >= 0, got {train['freeze_encoder_epochs']!r}")
    if data["count"] < 1:
        raise SegkitError(f"{where}: 'data.count' must be > 0, got {data['count']!r}")
    if data["max_color_distance"] is not None and data["format"] not in ("cityscapes-pairs", SYNTHETIC):
        raise SegkitError(f"{where}: 'data.max_color_distance' decodes raw cityscapes-pairs colour labels (data.format "
                          f"cityscapes-pairs or synthetic); data.format is "
                          f"{data['format'] or 'null (a prepared dataset, its labels already decoded)'}")
    _check_levers(config, where)
    _resolve_encoder(config["model"], where)
    if config["model"]["aux_head"] and config["model"]["name"] not in ("pspnet", "bisenetv2", "fastscnn"):
        raise SegkitError(f"{where}: 'model.aux_head' is only available for pspnet, bisenetv2 and fastscnn, "
                          f"not {config['model']['name']!r}")
    if config["model"]["detail_head"] and config["model"]["name"] != "fastscnn":
        raise SegkitError(f"{where}: 'model.detail_head' is only available for fastscnn, not {config['model']['name']!r}")


def _check_size_fits_model(config: dict, where: str) -> None:
    """data.size must be a multiple of the model's input multiple: refused here, before any data is prepared at it."""
    from segkit import models

    size, name = config["data"]["size"], config["model"]["name"]
    if size is not None and any(side % models.input_multiple(name) for side in size):
        raise SegkitError(f"{where}: 'data.size' {size[0]}x{size[1]} is not a multiple of {models.input_multiple(name)}, "
                          f"which model {name} needs")


def _check_levers(config: dict, where: str) -> None:
    """Ranges of the training-recipe levers (schedule, EMA, OHEM, crops, CPU settings)."""
    opt, train, loss = config["optimizer"], config["train"], config["loss"]
    if not 0 <= opt["warmup"] < 1:
        raise SegkitError(f"{where}: 'optimizer.warmup' is a share of the steps in [0, 1), got {opt['warmup']!r}")
    if opt["schedule"] == "onecycle" and opt["warmup"] == 0:
        raise SegkitError(f"{where}: 'optimizer.schedule' onecycle needs a rising phase: set optimizer.warmup > 0 (e.g. 0.3)")
    if opt["span"] == "budget" and (train["max_minutes"] is None or opt["schedule"] == "constant"):
        raise SegkitError(f"{where}: 'optimizer.span' budget needs train.max_minutes and a poly or onecycle optimizer.schedule")
    if opt["ema"] is not None and not 0 < opt["ema"] < 1:
        raise SegkitError(f"{where}: 'optimizer.ema' is a momentum in (0, 1), e.g. 0.999, got {opt['ema']!r}")
    if opt["nesterov"] and opt["name"] != "sgd":
        raise SegkitError(f"{where}: 'optimizer.nesterov' applies to sgd only, not {opt['name']!r}")
    if not 0 < loss["ohem_threshold"] <= 1 or loss["ohem_min_kept"] < 0:
        raise SegkitError(f"{where}: 'loss.ohem_threshold' must be in (0, 1] and 'loss.ohem_min_kept' >= 0, "
                          f"got {loss['ohem_threshold']!r} and {loss['ohem_min_kept']!r}")
    if loss["lovasz_bins"] is not None and loss["lovasz_bins"] < 2:
        raise SegkitError(f"{where}: 'loss.lovasz_bins' must be at least 2 or null, got {loss['lovasz_bins']!r}")
    if train["jit_compile"] not in JIT_COMPILE:
        raise SegkitError(f"{where}: 'train.jit_compile' is {train['jit_compile']!r}; valid: auto, true, false")
    if train["label_stride"] < 1:
        raise SegkitError(f"{where}: 'train.label_stride' must be >= 1 (1: every pixel), got {train['label_stride']!r}")
    if train["threads"] is not None and train["threads"] < 1:
        raise SegkitError(f"{where}: 'train.threads' must be >= 1 or null, got {train['threads']!r}")
    if config["augment"]["crop"] is not None and not _is_size(config["augment"]["crop"]):
        raise SegkitError(f"{where}: 'augment.crop' must be [H, W] with positive integers, got {config['augment']['crop']!r}")
    if train["progressive"] is not None:
        _check_progressive(train["progressive"], where)


def _check_progressive(stages, where: str) -> None:
    shape_ok = bool(stages) and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], int) and not isinstance(s[0], bool)
                                    and _is_size(s[1]) for s in stages)
    if not shape_ok:
        raise SegkitError(f"{where}: 'train.progressive' must be [[epoch, [H, W]], ...], got {stages!r}")
    epochs = [s[0] for s in stages]
    if epochs[0] != 1 or epochs != sorted(set(epochs)):
        raise SegkitError(f"{where}: 'train.progressive' epochs must start at 1 and increase, got {epochs}")


def _is_size(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def _resolve_encoder(model: dict, where: str) -> None:
    """Sets a null model.encoder to the model's default; refuses an encoder the model cannot take."""
    from segkit import models

    accepted = models.encoders_for(model["name"])
    if model["encoder"] is None:
        model["encoder"] = models.default_encoder(model["name"])
    elif model["encoder"] not in accepted:
        raise SegkitError(f"{where}: 'model.encoder' {model['encoder']!r} does not fit model {model['name']!r}; "
                          f"it takes: {', '.join(accepted)}")
