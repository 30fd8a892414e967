"""`segkit.train`: one config in, one run folder out (checkpoints, history, metrics, figures), resumable."""

import importlib.util
import shutil

import keras
import numpy as np

from segkit import data as data_lib
from segkit import losses, metrics, models
from segkit.errors import SegkitError, first_line
from segkit.models import batchnorm
from segkit.workflows import config as config_lib
from segkit.workflows import datasets, distribution, optim, report, runs
from segkit.workflows.callbacks import PreciseBatchNorm, RunRecorder

AUX_LOSS_WEIGHT = 0.4  # PSPNet paper: auxiliary loss weight


def train(config, *, overrides=None, resume=None, runs_dir="runs", verbose="auto") -> runs.Run:
    """Trains the model a config describes and returns its run folder.

    config: a YAML path, the name of a shipped config (`segkit configs` lists them) or a dict;
    overrides: {"train.epochs": 3} or ["train.epochs=3"].
    resume: a run folder to continue from its last checkpoint (then config and overrides must be None).
    With train.distribution=multi_worker_mirrored every worker makes the same call with its own TF_CONFIG;
    only the chief writes to runs_dir (or resume), the others to a temporary folder removed before returning.
    """
    if resume is not None:
        if config is not None or overrides:
            raise SegkitError("give either a config (with overrides) or resume=RUN_DIR, not both")
        run = runs.Run.open(resume)
        cfg = run.config
        if run.state["status"] == "finished":
            raise SegkitError(f"run {run.path} has finished ({run.state['epoch']} of {cfg['train']['epochs']} epochs); nothing to resume")
    else:
        cfg = config_lib.load(config, overrides)
    data = datasets.training_data(cfg)  # bad data fails here, before a new run folder exists
    # A non-chief worker of a multi-worker run takes the same steps in a throwaway folder (scratch).
    with distribution.worker_scratch(cfg["train"]["distribution"]) as scratch:
        if resume is None:
            run = runs.Run.create(scratch or runs_dir, cfg)
        else:
            run = run if scratch is None else runs.Run(shutil.copytree(run.path, scratch / run.path.name))
            run.remove_stale_checkpoints()
        return _train_in(run, cfg, data, verbose)


def _train_in(run, cfg, data, verbose) -> runs.Run:
    state = run.state
    print(f"run folder: {run.path}\nresolved config ({runs.CONFIG} in the run folder):")
    print(config_lib.dump(cfg).rstrip())
    keras.utils.set_random_seed(cfg["train"]["seed"])
    policy = keras.mixed_precision.dtype_policy()
    if _mixed_precision(cfg["train"]["mixed_precision"]):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        _fit(cfg, run, state, data, verbose)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    report.finish_run(run, data, batch_size=cfg["train"]["batch_size"])
    print(f"run folder: {run.path}")
    return run


def _mixed_precision(setting) -> bool:
    """train.mixed_precision: true/false as given; auto: on when a GPU is found (float16 only pays off there)."""
    if setting != "auto":
        return setting
    gpu = distribution.gpu_name()
    print(f"mixed precision (auto): {'on, GPU ' + gpu if gpu else 'off, no GPU found'}")
    return gpu is not None


def _fit(cfg, run, state, data, verbose) -> None:
    train_cfg = cfg["train"]
    runs.write_json(run.file(runs.DATASET), data.describe())
    train_loader = _loader(cfg, data.train, shuffle=True)
    for _ in range(state["epoch"]):  # replay finished epochs' shuffles: a resumed run sees the batches an uninterrupted one would
        train_loader.on_epoch_end()
    val_loader = _loader(cfg, data.val, shuffle=False)
    steps = len(train_loader) if train_cfg["steps_per_epoch"] is None else min(len(train_loader), train_cfg["steps_per_epoch"])
    with distribution.scope(train_cfg["distribution"]) as replicas:
        if replicas > 1:
            print(f"data-parallel training on {replicas} devices ({train_cfg['distribution']})")
        model = build_model(cfg, data.num_classes, data.train.image_size)
        _compile(model, cfg, data, total_steps=steps * train_cfg["epochs"])
        if state["checkpoint"] is not None:
            _restore(model, run.last_checkpoint())
            print(f"resuming after epoch {state['epoch']} from {run.last_checkpoint().name}")
        recorder = RunRecorder(run, models.without_aux(model), state,
                               max_seconds=None if train_cfg["max_minutes"] is None else 60 * train_cfg["max_minutes"])
        model.fit(
            _with_aux_targets(train_loader, model),
            validation_data=_with_aux_targets(val_loader, model),
            epochs=train_cfg["epochs"],
            initial_epoch=state["epoch"],
            steps_per_epoch=train_cfg["steps_per_epoch"],
            callbacks=[*_precise_bn(cfg, data.train), recorder, *_tensorboard(run)],
            shuffle=False,  # the loader shuffles from (seed, epoch); Keras' own batch shuffle would not survive a resume
            verbose=verbose,
        )
    if recorder.non_finite_at is not None:
        epoch, step = recorder.non_finite_at
        run.write_state({**recorder.state, "status": "stopped: non-finite loss"})
        kept = f"the last good checkpoint (epoch {recorder.state['epoch']}) is kept" if recorder.state["checkpoint"] else "no epoch finished, so no checkpoint was written"
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        raise SegkitError(f"training loss became NaN or infinite at {where}; stopped. In {run.path} {kept}; "
                          "lower optimizer.learning_rate or check the data")
    run.write_state({**recorder.state, "status": "finished"})


def build_model(cfg: dict, num_classes: int, image_size) -> keras.Model:
    """The model a config describes, for `num_classes` classes and images of `image_size` (H, W)."""
    spec = cfg["model"]
    options = {"aux_head": True} if spec["aux_head"] else {}
    model = models.build(spec["name"], encoder=spec["encoder"], num_classes=num_classes,
                         input_shape=(*image_size, 3), encoder_weights=spec["encoder_weights"], **options)
    if spec["bn_momentum"] is not None:
        batchnorm.set_momentum(model, spec["bn_momentum"])
    return model


def _compile(model, cfg, data, total_steps) -> None:
    weights = None
    if cfg["loss"]["class_weights"] is not None:
        share = datasets.class_pixel_share(data.train, data.num_classes)
        weights = losses.class_weights(share, method=cfg["loss"]["class_weights"])
    loss = losses.get(cfg["loss"]["name"], num_classes=data.num_classes, class_weights=weights, ignore_index=data_lib.IGNORE_INDEX)
    miou = metrics.MeanIoU(data.num_classes, ignore_index=data_lib.IGNORE_INDEX, name="miou")
    optimizer = optim.build(cfg["optimizer"], total_steps)
    if isinstance(model.output, dict):
        model.compile(optimizer, loss={"logits": loss, "aux_logits": loss},
                      loss_weights={"logits": 1.0, "aux_logits": AUX_LOSS_WEIGHT}, metrics={"logits": [miou]})
    else:
        model.compile(optimizer, loss=loss, metrics=[miou])


def _restore(model, checkpoint) -> None:
    """Loads weights and optimizer state (step count, moments; the schedule follows the step count)."""
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(checkpoint)
    except Exception as err:  # noqa: BLE001 -- Keras raises many types for a damaged or foreign file
        raise SegkitError(f"checkpoint {checkpoint} cannot be loaded into this run's model: {first_line(err)}") from None


def _loader(cfg, split, *, shuffle):
    aug = cfg["augment"]
    augment = None
    if shuffle and aug["enabled"]:
        augment = data_lib.Augment(hflip=aug["hflip"], scale=tuple(aug["scale"]), color_jitter=aug["color_jitter"])
    return data_lib.make_loader(split.dataset.images, split.dataset.masks, split.indices, cfg["train"]["batch_size"],
                                shuffle=shuffle, augment=augment, seed=cfg["train"]["seed"])


class _AuxTargets(keras.utils.PyDataset):
    """Feeds the same mask to both outputs of a model with an auxiliary head."""

    def __init__(self, loader):
        super().__init__()
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __getitem__(self, index):
        x, y = self.loader[index]
        return x, {"logits": y, "aux_logits": y}

    def on_epoch_end(self):
        self.loader.on_epoch_end()


def _precise_bn(cfg, split) -> list:
    """The callback that re-estimates BatchNorm statistics before each validation, from un-augmented training batches."""
    count, size, seed = cfg["train"]["precise_bn"], cfg["train"]["batch_size"], cfg["train"]["seed"]
    if not count:
        return []

    def batches_for(epoch):  # drawn from (seed, epoch): a resumed run re-estimates from the batches an uninterrupted one would
        picks = np.random.default_rng([seed, epoch]).permutation(split.indices)[: count * size]
        loader = data_lib.make_loader(split.dataset.images, split.dataset.masks, picks, size, shuffle=False)
        return (loader[i][0] for i in range(len(loader)))

    return [PreciseBatchNorm(batches_for)]


def _with_aux_targets(loader, model):
    return _AuxTargets(loader) if isinstance(model.output, dict) else loader


def _tensorboard(run) -> list:
    if keras.backend.backend() != "tensorflow":
        print(f"note: TensorBoard logs need the TensorFlow backend; skipped on {keras.backend.backend()}")
        return []
    if importlib.util.find_spec("tensorboard") is None:
        print("note: TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(run.file("tensorboard")), write_graph=False)]

