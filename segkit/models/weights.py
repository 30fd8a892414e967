"""ImageNet encoder weights: classification_models' Keras h5 files for the ResNets, fetched with a hash check and
loaded by layer name; keras.applications' own download for its encoders."""

import hashlib
import os
import urllib.parse
from pathlib import Path

import h5py
import numpy as np

from segkit import files
from segkit.errors import SegkitError
from segkit.models.applications import APPLICATIONS, application_backbone, copy_backbone_weights
from segkit.models.encoders import encoder_layer_names
from segkit.models.resnet import ENCODERS

RELEASE_URL = "https://github.com/qubvel/classification_models/releases/download/0.0.1/"
# The ImageNet files without the classifier that segmentation_models downloads, with their md5.
IMAGENET_FILES = {
    "resnet18": ("resnet18_imagenet_1000_no_top.h5", "318e3ac0cd98d51e917526c9f62f0b50"),
    "resnet34": ("resnet34_imagenet_1000_no_top.h5", "8caaa0ad39d927cb8ba5385bf945d582"),
    "resnet50": ("resnet50_imagenet_1000_no_top.h5", "db3b217156506944570ac220086f09b6"),
}
KNOWN_MD5 = dict(IMAGENET_FILES.values())


def load_encoder_weights(model, source, encoder):
    """Loads ResNet encoder weights into `model`'s encoder layers, matched by layer name.

    `source` is "imagenet" (the classification_models release file for `encoder`, e.g. "resnet34"),
    an http(s) URL (md5-checked when its file name is a known release file) or a local h5 path.
    Downloads are cached in `$SEGKIT_CACHE`, else `~/.keras/models` (where segmentation_models keeps them).
    A keras.applications encoder ("mobilenetv3_large", ...) takes "imagenet" only: keras.applications'
    own file, downloaded and cached by Keras.
    """
    if encoder in APPLICATIONS:
        _load_application_weights(model, source, encoder)
        return
    if encoder not in ENCODERS:
        raise SegkitError(f"unknown encoder {encoder!r}; available: {', '.join([*ENCODERS, *APPLICATIONS])}")
    path = weights_file(source, encoder)
    stored = read_h5_weights(path)
    expected = encoder_layer_names(encoder)
    missing = sorted(expected - stored.keys())
    if missing:
        raise SegkitError(
            f"{path} lacks {len(missing)} of the {len(expected)} {encoder} encoder layers "
            f"(e.g. {', '.join(missing[:3])}): not {encoder} weights"
        )
    foreign = sorted(stored.keys() - expected)
    if foreign:
        raise SegkitError(
            f"{path} holds {len(foreign)} layers a {encoder} encoder does not have "
            f"(e.g. {', '.join(foreign[:3])}): weights of another network, or with a classifier top"
        )
    for name in expected:
        _assign(model.get_layer(name), stored[name], path)


def _load_application_weights(model, source, encoder):
    if source != "imagenet":
        raise SegkitError(f"encoder weights {source!r} for {encoder}: only 'imagenet' (keras.applications' own) is supported")
    try:
        backbone = application_backbone(encoder, weights="imagenet")
    except (OSError, ValueError) as error:  # keras raises these for failed downloads and bad files
        raise SegkitError(f"could not get keras.applications ImageNet weights for {encoder}: {error}") from None
    copy_backbone_weights(model, backbone)


def weights_file(source, encoder):
    """Local path of the h5 file `source` ("imagenet", URL or path) names, downloading it if needed."""
    if source == "imagenet":
        file_name, md5 = IMAGENET_FILES[encoder]
        return _fetch(RELEASE_URL + file_name, file_name, md5)
    source = str(source)
    if source.startswith(("http://", "https://")):
        file_name = Path(urllib.parse.urlparse(source).path).name or "weights.h5"
        if file_name in KNOWN_MD5:
            return _fetch(source, file_name, KNOWN_MD5[file_name])
        # An unknown file is cached per URL, so two servers' "weights.h5" never overwrite each other.
        url_key = hashlib.sha1(source.encode()).hexdigest()[:10]
        return _fetch(source, f"{url_key}_{file_name}", None)
    if not Path(source).is_file():
        raise SegkitError(f"encoder weights {source!r}: no such file (expected 'imagenet', a URL or an h5 path)")
    return Path(source)


def read_h5_weights(path):
    """{layer name: {weight name ("kernel", "gamma", ...): array}} from a Keras h5 weights or model file.

    Reads the legacy layout that Keras 2 (the release files) and Keras 3's `.h5` saving both write:
    a `layer_names` attribute, one group per layer whose `weight_names` attribute names its datasets
    ("conv0/kernel:0" in Keras 2, "conv0/kernel" in Keras 3); full-model files nest it in `model_weights`.
    """
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise SegkitError(f"{path} is not a readable HDF5 file ({error})") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        layer_names = _string_attribute(root, "layer_names")
        if layer_names is None:
            raise SegkitError(f"{path} is not a Keras h5 weights file: it has no 'layer_names' attribute")
        stored = {}
        for layer_name in layer_names:
            weight_names = _string_attribute(root[layer_name], "weight_names") or []
            if weight_names:
                stored[layer_name] = {_short_name(w): np.asarray(root[layer_name][w]) for w in weight_names}
        return stored


def _assign(layer, values, path):
    for variable in layer.weights:
        value = values.get(variable.name)
        if value is None:
            raise SegkitError(f"{path}: layer {layer.name} has no {variable.name!r} weight (it has {sorted(values)})")
        if tuple(value.shape) != tuple(variable.shape):
            raise SegkitError(
                f"{path}: layer {layer.name} weight {variable.name} has shape {tuple(value.shape)}, "
                f"the model needs {tuple(variable.shape)}"
            )
        variable.assign(value)


def _short_name(weight_name):
    """'stage1_unit1_bn1/moving_mean:0' (Keras 2) or '.../moving_mean' (Keras 3) -> 'moving_mean'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _string_attribute(group, name):
    """A list-of-strings attribute, which Keras splits into `name0`, `name1`, ... when it is too long."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
        if not chunks:
            return None
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


def _cache_dir():
    directory = Path(os.environ.get("SEGKIT_CACHE") or Path.home() / ".keras" / "models")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _fetch(url, file_name, md5):
    """Downloads `url` into the cache as `file_name` (whole or not at all), verifying `md5` if given."""
    target = _cache_dir() / file_name
    if target.is_file() and (md5 is None or _md5(target) == md5):
        return target
    with files.atomic_path(target) as partial:
        got = files.download(url, partial, "md5")
        if md5 is not None and got != md5:
            raise SegkitError(f"{url}: downloaded file has md5 {got}, expected {md5}; it was not kept")
    return target


def _md5(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()
