"""Starting a run from a trained model: its matching layers' weights (model.init_from) and a frozen-encoder warm-up.

A layer is carried over when the source model has a layer of the same name whose weights have the same
shapes; every other layer keeps its fresh initialisation (the class head, when the class count differs).
The encoder frozen during the warm-up is the one `segkit.models.encoder_layer_names` names for the model.
"""

import keras

from segkit import files, models
from segkit.errors import SegkitError
from segkit.workflows import loading


def pin_source(cfg: dict) -> dict:
    """The config with model.init_from resolved to the .keras file it names and model.init_from_sha256 set to that
    file's digest; a missing file, or one whose digest is not the one the config gives, is refused. The path stays
    as given, relative to the working directory like data.path, so a run's record holds no machine's folders.

    Args:
        cfg (dict): a resolved config (`segkit.workflows.config.load`).
    """
    spec = cfg["model"]
    if spec["init_from"] is None:
        return cfg
    path = _source_file(spec["init_from"])
    digest = files.sha256_of(path)
    if spec["init_from_sha256"] not in (None, digest):
        raise SegkitError(f"model.init_from {path} has sha256 {digest}, not the {spec['init_from_sha256']} that "
                          "model.init_from_sha256 gives: the file has changed since")
    return {**cfg, "model": {**spec, "init_from": str(path), "init_from_sha256": digest}}


def init_from(model: keras.Model, cfg: dict) -> None:
    """Loads into `model` every layer of the model.init_from source whose name and weight shapes match, and prints
    what was loaded and what starts afresh. Nothing to do when model.init_from is null.

    Args:
        model (keras.Model): the freshly built model to train.
        cfg (dict): a config that went through `pin_source`.
    """
    spec = cfg["model"]
    if spec["init_from"] is None:
        return
    path = pin_source(cfg)["model"]["init_from"]  # checks the file still has the digest recorded
    try:
        source, _ = loading.load_model(path)
    except SegkitError as err:
        raise SegkitError(f"model.init_from: {err}") from None
    loaded, afresh = copy_matching_weights(model, source)
    if not loaded:
        raise SegkitError(f"model.init_from {path}: none of its layers matches a layer of this "
                          f"{models.label(spec['name'], spec['encoder'])} model by name and weight shapes")
    total = len(loaded) + len(afresh)
    print(f"model.init_from {path}: loaded {len(loaded)} of this model's {total} layers with weights")
    if afresh:
        print(f"initialised afresh ({len(afresh)}): " + ", ".join(f"{name} ({why})" for name, why in afresh.items()))


def copy_matching_weights(model: keras.Model, source: keras.Model) -> tuple[list, dict]:
    """Copies the weights of each layer of `source` into the layer of `model` with the same name and weight shapes.

    Args:
        model (keras.Model): the model to fill.
        source (keras.Model): the model to copy from.

    Returns:
        (names of the layers loaded, {name of a layer not loaded: why}), over `model`'s layers with weights.
    """
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    loaded, afresh = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        match = theirs.get(layer.name)
        if match is None:
            afresh[layer.name] = "not in the source"
        elif _shapes(match) != _shapes(layer):
            afresh[layer.name] = f"weight shapes {_shapes(match)} in the source, {_shapes(layer)} here"
        else:
            layer.set_weights(match.get_weights())
            loaded.append(layer.name)
    return loaded, afresh


def encoder_layers(model: keras.Model, cfg: dict) -> list:
    """The layers of `model` that form the encoder of the model the config names (see `models.encoder_layer_names`);
    the frozen warm-up they are for runs under the TensorFlow backend only.

    Args:
        model (keras.Model): the model built from `cfg`.
        cfg (dict): a resolved config.
    """
    if keras.backend.backend() != "tensorflow":
        # Keras' JAX optimizer updates exactly the weights it was built on: it cannot skip frozen ones.
        raise SegkitError(f"train.freeze_encoder_epochs needs the TensorFlow backend, not {keras.backend.backend()}; "
                          "set it to 0 or run with KERAS_BACKEND=tensorflow")
    names = models.encoder_layer_names(cfg["model"]["name"], cfg["model"]["encoder"])
    layers = [layer for layer in model.layers if layer.name in names]
    if not layers:
        raise SegkitError(f"train.freeze_encoder_epochs: model {model.name} has none of the encoder layers of "
                          f"{models.label(cfg['model']['name'], cfg['model']['encoder'])}")
    return layers


def set_frozen(model: keras.Model, layers: list, frozen: bool) -> None:
    """Freezes `layers` of a compiled `model` (their weights and BatchNorm statistics stay as they are) or unfreezes them.

    The optimizer is built over every weight first, so its state covers the encoder whether a checkpoint is saved
    during the warm-up or after it; the next fit traces a train step over the weights now trainable.

    Args:
        model (keras.Model): the compiled model.
        layers (list): its layers to freeze or unfreeze.
        frozen (bool): True to freeze.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for layer in layers:
        layer.trainable = not frozen
    model.make_train_function(force=True)


def warmup_spans(spans: list, frozen_epochs: int) -> list:
    """Training spans [(first, last, crop), ...] (0-based first, exclusive last) split where the frozen-encoder
    warm-up of `frozen_epochs` epochs ends: [(first, last, crop, frozen), ...].

    Args:
        spans (list): the spans still to train (`segkit.workflows.train.stages`).
        frozen_epochs (int): train.freeze_encoder_epochs.
    """
    split = []
    for first, last, crop in spans:
        cut = min(max(first, frozen_epochs), last)
        split += [(a, b, crop, a < frozen_epochs) for a, b in ((first, cut), (cut, last)) if a < b]
    return split


def _source_file(source):
    try:
        return loading.model_file(source)[0]
    except SegkitError as err:
        raise SegkitError(f"model.init_from: {err}") from None


def _shapes(layer) -> list:
    return [tuple(weight.shape) for weight in layer.weights]
