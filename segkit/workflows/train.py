"""`segkit.train`: one config in, one run folder out (checkpoints, history, metrics, figures), resumable."""

import contextlib
import dataclasses
import errno
import shutil
import warnings

import keras
import numpy as np

from segkit import data as data_lib
from segkit import files, losses, metrics, models
from segkit.errors import SegkitError, first_line
from segkit.models import batchnorm
from segkit.workflows import config as config_lib
from segkit.workflows import datasets, distribution, finetune, fused_batchnorm, optim, run_report, runs, tensorboard
from segkit.workflows.callbacks import BudgetSpan, EmaWeights, PreciseBatchNorm, RunRecorder, progress_display


def train(config, *, overrides=None, resume=None, runs_dir="runs", verbose="auto") -> runs.Run:
    """Trains the model a config describes and returns its run folder.

    config: a YAML path, the name of a shipped config (`segkit configs` lists them) or a dict;
    overrides: {"train.epochs": 3} or ["train.epochs=3"].
    resume: a run folder to continue from its last checkpoint (then config and overrides must be None).
    verbose: "auto" shows Keras' progress bar in a terminal or notebook and writes one line per epoch when stdout
    is a file; 1 the bar, 2 the lines, 0 nothing.
    With train.distribution=multi_worker_mirrored every worker makes the same call with its own TF_CONFIG;
    only the chief writes to runs_dir (or resume), the others to a temporary folder removed before returning.
    """
    with contextlib.ExitStack() as held:  # the run folder stays locked until training and its report are done
        return _train(config, overrides, resume, runs_dir, verbose, held)


def _train(config, overrides, resume, runs_dir, verbose, held: contextlib.ExitStack) -> runs.Run:
    if resume is not None:
        if config is not None or overrides:
            raise SegkitError("give either a config (with overrides) or resume=RUN_DIR, not both")
        run = runs.Run.open(resume)
        files.check_writable_folder(run.path, "--resume")
        held.enter_context(_writing(run, f"--resume {run.path}"))  # first: a second writer is refused at once
        cfg = run.config
        if run.state["status"] == "finished" and run.file(runs.METRICS).is_file():
            raise SegkitError(f"run {run.path} has finished ({run.state['epoch']} of {cfg['train']['epochs']} epochs); nothing to resume")
    else:
        cfg = finetune.pin_source(config_lib.load(config, overrides))
        files.check_writable_folder(runs_dir, "--runs")  # before the data is prepared and the model built
    fresh = resume is None or run.state["checkpoint"] is None  # weights from model.init_from, not from a checkpoint
    data = datasets.training_data(cfg)  # bad data fails here, before a new run folder exists
    if resume is not None and run.state["status"] == "finished":  # trained, but its report was cut short (a full disk)
        return _report(run, data, cfg)
    # A non-chief worker of a multi-worker run takes the same steps in a throwaway folder (scratch).
    with distribution.worker_scratch(cfg["train"]["distribution"]) as scratch:

        def open_run() -> runs.Run:
            if resume is None:
                return held.enter_context(_writing(runs.Run.create(scratch or runs_dir, cfg), f"--runs {runs_dir}"))
            resumed = run if scratch is None else runs.Run(shutil.copytree(run.path, scratch / run.path.name))
            resumed.remove_stale_checkpoints()
            return resumed

        return _train_in(open_run, cfg, data, verbose, fresh)


def _train_in(open_run, cfg, data, verbose, fresh) -> runs.Run:
    set_threads(cfg["train"]["threads"])
    print(f"resolved config ({runs.CONFIG} in the run folder):")
    print(config_lib.dump(cfg).rstrip())
    keras.utils.set_random_seed(cfg["train"]["seed"])
    policy = keras.mixed_precision.dtype_policy()
    mixed = mixed_precision_policy(cfg["train"]["mixed_precision"])
    if mixed:
        keras.mixed_precision.set_dtype_policy(mixed)
    try:
        run = _fit(cfg, open_run, data, verbose, fresh)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    return _report(run, data, cfg)


def _report(run: runs.Run, data, cfg) -> runs.Run:
    run_report.finish_run(run, data, batch_size=cfg["train"]["batch_size"])
    print(f"run folder: {run.path}")
    return run


def mixed_precision_policy(setting) -> str | None:
    """The Keras dtype policy for train.mixed_precision, or None for float32. true: float16 compute; "bfloat16":
    bfloat16 compute; auto: float16 on a GPU, bfloat16 on a CPU that computes it natively, else float32."""
    if setting != "auto":
        return {True: "mixed_float16", "bfloat16": "mixed_bfloat16"}.get(setting)
    gpu = distribution.gpu_name()
    if gpu:
        print(f"mixed precision (auto): float16, GPU {gpu}")
        return "mixed_float16"
    if distribution.cpu_has_bfloat16():
        print("mixed precision (auto): bfloat16, no GPU; this CPU computes bfloat16 natively")
        return "mixed_bfloat16"
    print("mixed precision (auto): off, no GPU and no native bfloat16 on this CPU")
    return None


def _fit(cfg, open_run, data, verbose, fresh) -> runs.Run:
    train_cfg = cfg["train"]
    val_loader = None if data.val is None else _loader(cfg, data.val, shuffle=False)
    steps = len(_loader(cfg, data.train, shuffle=True))
    steps = steps if train_cfg["steps_per_epoch"] is None else min(steps, train_cfg["steps_per_epoch"])
    with distribution.scope(train_cfg["distribution"]) as replicas:
        if replicas > 1:
            print(f"data-parallel training on {replicas} devices ({train_cfg['distribution']})")
        # Crops train at other sizes than validation: the model then takes any size.
        model = build_model(cfg, data.num_classes, (None, None) if training_sizes(cfg) else data.train.image_size)
        _check_training_sizes(cfg, model, data)  # crops the model cannot take, before a run folder exists
        fused_batchnorm.use_fused_kernel(model)  # the same statistics, a faster step under TensorFlow
        # `model` is what best.keras holds; `trainer` shares its weights and is what fit, compile and resume use.
        trainer = models.strided_logits(model, train_cfg["label_stride"])
        if fresh:
            finetune.init_from(model, cfg)  # a source that fits no layer fails here too
        encoder = finetune.encoder_layers(model, cfg) if train_cfg["freeze_encoder_epochs"] else []
        budget = optim.spans_budget(cfg)
        _compile(trainer, cfg, data, total_steps=steps * train_cfg["epochs"], budget=budget)
        run = open_run()  # only now: a config the model or its weights reject leaves no orphan run folder
        print(f"run folder: {run.path}")
        state = run.state
        runs.write_json(run.file(runs.DATASET), data.describe())
        _print_span(cfg, steps, budget)
        if data.val is None:
            print(f"data.val: 0: training on all {len(data.train)} items of {data.train.path}, no validation; best.keras "
                  "holds the final weights (with a learning rate that decays to its end, the last weights are the ones to keep)")
        if state["checkpoint"] is not None:
            _restore(trainer, run.last_checkpoint())
            print(f"resuming after epoch {state['epoch']} from {run.last_checkpoint().name}")
        ema = [EmaWeights()] if cfg["optimizer"]["ema"] is not None else []
        aux = tuple(trainer.output) if isinstance(trainer.output, dict) else ()
        label_stride = train_cfg["label_stride"]
        recorder = None
        # One fit per training size: Keras fixes a dataset's batch shape when fit starts.
        max_seconds = None if train_cfg["max_minutes"] is None else 60 * train_cfg["max_minutes"]
        shown, fit_verbose = progress_display(verbose, train_cfg["epochs"])  # a bar for people, lines for a log file
        for first, last, crop, frozen in finetune.warmup_spans(stages(cfg, state["epoch"]), train_cfg["freeze_encoder_epochs"]):
            if encoder:
                print(f"epochs {first + 1}-{last}: encoder " + ("frozen (warm-up)" if frozen else "trains too"))
                finetune.set_frozen(model, encoder, frozen)
            recorder = RunRecorder(run, inference_model(model), state if recorder is None else recorder.state,
                                   max_seconds=max_seconds, evaluation_weights=ema[0].swapped if ema else None)
            # Before the recorder: the checkpoint it saves at an epoch's end holds the schedule length just estimated.
            span = [BudgetSpan(optim.schedule_length(trainer.optimizer), steps * train_cfg["epochs"], max_seconds,
                               recorder.used_seconds)] if budget else []
            if crop is not None and train_cfg["progressive"] is not None:
                print(f"epochs {first + 1}-{last}: training on {crop[0]}x{crop[1]} crops")
                # A new train function traces at the stage's size; retracing the old one would relax H and W to
                # unknown, which some layers (bilinear UpSampling2D under TensorFlow) cannot build.
                trainer.make_train_function(force=True)
            trainer.fit(
                _EpochSteps(_loader(cfg, data.train, shuffle=True, crop=crop), steps, epoch=first, aux=aux,
                            label_stride=label_stride),
                validation_data=None if val_loader is None else _EpochSteps(val_loader, len(val_loader), aux=aux,
                                                                            label_stride=label_stride),
                epochs=last,
                initial_epoch=first,
                # EMA swaps its weights in before precise BN re-estimates the statistics for them.
                callbacks=[*shown, *ema, *_precise_bn(cfg, data, ema[0].swapped if ema else None), *span, recorder,
                           *tensorboard.callbacks(run, data, models.without_aux(model), ema[0].swapped if ema else None)],
                shuffle=False,  # the loader shuffles from (seed, epoch); Keras' own batch shuffle would not survive a resume
                verbose=fit_verbose,
            )
            if recorder.stopped:
                break
    if recorder.non_finite_at is not None:
        epoch, step = recorder.non_finite_at
        run.write_state({**recorder.state, "status": "stopped: non-finite loss"})
        kept = f"the last good checkpoint (epoch {recorder.state['epoch']}) is kept" if recorder.state["checkpoint"] else "no epoch finished, so no checkpoint was written"
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        raise SegkitError(f"training loss became NaN or infinite at {where}; stopped. In {run.path} {kept}; "
                          "lower optimizer.learning_rate or check the data")
    run.write_state({**recorder.state, "status": "finished"})
    return run


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextlib.contextmanager
def _writing(run: runs.Run, label: str):
    """Holds `run`'s lock while training writes into it. A full or read-only disk ends in one line naming `label`
    (the option that chose the folder); an interrupt (Ctrl-C, SIGTERM) marks the run stopped. Both say how to go on."""
    with run.lock():
        try:
            yield run
        except KeyboardInterrupt:
            _mark_stopped(run, "stopped: interrupted")
            print(f"interrupted: {_standing(run)}; continue with: segkit train --resume {run.path}")
            raise
        except OSError as err:
            if err.errno not in _DISK_FULL:
                raise
            _mark_stopped(run, f"stopped: {err.strerror}")
            raise SegkitError(f"{label}: cannot write ({err.strerror}); {_standing(run)}; make room, then "
                              f"{_resume_does(run)} with: segkit train --resume {run.path}") from None


def _mark_stopped(run: runs.Run, status: str) -> None:
    """Says in state.json why a run in training stopped; its committed epoch and checkpoint stay as they are."""
    with contextlib.suppress(OSError, SegkitError):  # a full disk may refuse even this small write
        state = run.state
        if state["status"] in ("created", "training"):
            run.write_state({**state, "status": status})


def _standing(run: runs.Run) -> str:
    try:
        state = run.state
    except SegkitError:
        return f"{run.path} is kept as it was"
    if state["status"] == "finished":
        return f"training of {run.path} finished ({state['epoch']} epochs) but its report is not written"
    epoch = state["epoch"]
    return f"{run.path} keeps its last committed epoch ({epoch})" if epoch else f"no epoch of {run.path} had finished"


def _resume_does(run: runs.Run) -> str:
    """What `segkit train --resume` will do for a run stopped by a full disk: train on, or write the report."""
    with contextlib.suppress(SegkitError):
        if run.state["status"] == "finished":
            return "write it"
    return "continue"


def inference_model(model) -> keras.Model:
    """What best.keras holds: the main output on the trained weights, uncompiled, so the optimizer state stays
    out of it (only the resume checkpoint last-NNNN.keras needs that)."""
    main = models.without_aux(model)
    return keras.Model(main.input, main.output, name=main.name)


def _print_span(cfg, steps, budget) -> None:
    schedule, epochs, minutes = cfg["optimizer"]["schedule"], cfg["train"]["epochs"], cfg["train"]["max_minutes"]
    if budget:
        print(f"the {schedule} learning rate decays to its end where train.max_minutes={minutes:g} runs out "
              f"(optimizer.span: budget): its length is re-estimated from the measured step time, "
              f"at most train.epochs={epochs} ({steps * epochs} steps)")
    elif minutes is not None and schedule != "constant":
        print(f"note: the {schedule} learning rate spans train.epochs={epochs} ({steps * epochs} steps, optimizer.span: "
              f"epochs); train.max_minutes={minutes:g} may stop training before it ends")


def training_sizes(cfg) -> list:
    """The crop sizes training uses other than the data's own (augment.crop, train.progressive); [] for none."""
    if cfg["train"]["progressive"] is not None:
        return [tuple(size) for _, size in cfg["train"]["progressive"]]
    return [tuple(cfg["augment"]["crop"])] if cfg["augment"]["crop"] is not None else []


def stages(cfg, done: int) -> list:
    """[(first epoch, last epoch, crop or None), ...] still to train after `done` epochs, 0-based first, exclusive."""
    epochs, progressive = cfg["train"]["epochs"], cfg["train"]["progressive"]
    if progressive is None:
        crop = cfg["augment"]["crop"]
        return [(done, epochs, None if crop is None else tuple(crop))]
    starts = [epoch - 1 for epoch, _ in progressive] + [epochs]
    spans = [(max(a, done), min(b, epochs), tuple(size)) for a, b, (_, size) in zip(starts, starts[1:], progressive)]
    return [span for span in spans if span[0] < span[1]] or [(done, epochs, tuple(progressive[-1][1]))]


def set_threads(threads) -> None:
    """train.threads: TensorFlow's intra-op threads (inter-op 1), settable only before TensorFlow starts."""
    if threads is None or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already runs (e.g. a second train() in one process): it keeps its threads
        print(f"note: train.threads={threads} not applied: TensorFlow has started in this process; "
              f"it keeps {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")


def _check_training_sizes(cfg, model, data) -> None:
    """Raises when a crop size of augment.crop / train.progressive is not a multiple of the model's largest stride,
    or a training or validation size is not a multiple of train.label_stride."""
    multiple = models.required_multiple(model)
    for size in training_sizes(cfg):
        if any(side % multiple for side in size):
            raise SegkitError(f"training crop {size[0]}x{size[1]} (augment.crop / train.progressive) is not a multiple of "
                              f"{multiple}, which this model needs")
    stride = cfg["train"]["label_stride"]
    sizes = training_sizes(cfg) or [data.train.image_size]
    for size in sizes + ([] if data.val is None else [data.val.image_size]):
        if any(side % stride for side in size):
            raise SegkitError(f"train.label_stride {stride} does not divide the {size[0]}x{size[1]} images training or "
                              "validation sees; choose a stride that does")


def build_model(cfg: dict, num_classes: int, image_size) -> keras.Model:
    """The model a config describes, for `num_classes` classes and images of `image_size` (H, W)."""
    spec = cfg["model"]
    options = {head: True for head in ("aux_head", "detail_head") if spec[head]}
    model = models.build(spec["name"], encoder=spec["encoder"], num_classes=num_classes,
                         input_shape=(*image_size, 3), encoder_weights=spec["encoder_weights"], **options)
    if spec["bn_momentum"] is not None:
        batchnorm.set_momentum(model, spec["bn_momentum"])
    return model


def _compile(model, cfg, data, total_steps, budget=False) -> None:
    weights = None
    if cfg["loss"]["class_weights"] is not None:
        share = datasets.class_pixel_share(data.train, data.num_classes)
        weights = losses.class_weights(share, method=cfg["loss"]["class_weights"])
    loss = losses.get(cfg["loss"]["name"], num_classes=data.num_classes, class_weights=weights, ignore_index=data_lib.IGNORE_INDEX,
                      ohem_threshold=cfg["loss"]["ohem_threshold"],
                      ohem_min_kept=cfg["loss"]["ohem_min_kept"] // cfg["train"]["label_stride"] ** 2,
                      lovasz_bins=cfg["loss"]["lovasz_bins"], dice_classes=cfg["loss"]["dice_classes"])
    miou = metrics.MeanIoU(data.num_classes, ignore_index=data_lib.IGNORE_INDEX, name="miou")
    optimizer = optim.build(cfg["optimizer"], total_steps, budget=budget)
    jit = cfg["train"]["jit_compile"]
    if isinstance(model.output, dict):
        model.compile(optimizer, loss=_output_losses(model, loss),
                      loss_weights=models.aux_loss_weights(model), metrics={"logits": [miou]}, jit_compile=jit)
    else:
        model.compile(optimizer, loss=loss, metrics=[miou], jit_compile=jit)


def _output_losses(model, loss) -> dict:
    """The loss of each output of a multi-output model: the configured `loss` for every class-logit output, STDC's
    detail loss for a detail head's boundary logits (both take the same mask)."""
    detail = losses.DetailLoss(ignore_index=data_lib.IGNORE_INDEX)
    return {name: detail if name == models.DETAIL_OUTPUT else loss for name in model.output}


_OPTIMIZER_MISFIT = "Skipping variable loading for optimizer"  # Keras' warning; it then starts the optimizer afresh


def _restore(model, checkpoint) -> None:
    """Loads weights and optimizer state (step count, moments, a budget-spanned schedule's length)."""
    model.optimizer.build(model.trainable_variables)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=_OPTIMIZER_MISFIT)
            model.load_weights(checkpoint)
    except Exception as err:  # noqa: BLE001 -- Keras raises many types for a damaged or foreign file
        # e.g. a timed run begun before optimizer.span made the schedule's length part of the optimizer state
        why = "its optimizer state does not fit this run's optimizer" if _OPTIMIZER_MISFIT in str(err) else first_line(err)
        raise SegkitError(f"checkpoint {checkpoint} cannot be loaded into this run's model: {why}") from None


def _loader(cfg, split, *, shuffle, crop=None):
    aug = cfg["augment"]
    augment = None
    if shuffle and aug["enabled"]:
        augment = data_lib.Augment(hflip=aug["hflip"], scale=tuple(aug["scale"]), color_jitter=aug["color_jitter"])
    if shuffle and crop is not None:  # crops without the other augmentations when augment.enabled is false
        augment = dataclasses.replace(augment or data_lib.Augment(hflip=0, scale=(1, 1), color_jitter=0), crop=crop)
    return data_lib.make_loader(split.dataset.images, split.dataset.masks, split.indices, cfg["train"]["batch_size"],
                                shuffle=shuffle, augment=augment, seed=cfg["train"]["seed"], class_uniform=cfg["train"]["class_uniform"])


class _EpochSteps(keras.utils.PyDataset):
    """`steps` batches per fit epoch, taken in turn from the loader's endless stream of shuffled epochs.

    Batch k of fit epoch e is stream batch e * steps + k: a function of (seed, e, k) alone, so a run resumed
    at epoch e sees exactly the batches an uninterrupted one would, also when train.steps_per_epoch is below
    the loader's batches per epoch (Keras' own steps_per_epoch carries its iterator across epochs instead).
    aux: the output names of a model with auxiliary heads, each fed the same mask.
    label_stride: masks subsampled for a `models.strided_logits` model of that stride.
    """

    def __init__(self, loader, steps, *, epoch=0, aux=(), label_stride=1):
        super().__init__()
        self.loader, self.steps, self.epoch, self.aux, self.label_stride = loader, steps, epoch, aux, label_stride

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"step {index} out of range for {self.steps} steps")
        x, y = self.loader.batch_of(*divmod(self.epoch * self.steps + index, len(self.loader)))
        y = models.subsample_masks(y, self.label_stride)
        return (x, {name: y for name in self.aux}) if self.aux else (x, y)

    def on_epoch_end(self):
        self.epoch += 1


def _precise_bn(cfg, data, evaluation_weights) -> list:
    """The callback that re-estimates BatchNorm statistics before each validation (at each epoch's end in a run
    without validation), for the weights validated and saved as best.keras, from un-augmented training batches."""
    count, size, seed, split = cfg["train"]["precise_bn"], cfg["train"]["batch_size"], cfg["train"]["seed"], data.train
    if not count:
        return []

    def batches_for(epoch):  # drawn from (seed, epoch): a resumed run re-estimates from the batches an uninterrupted one would
        picks = np.random.default_rng([seed, epoch]).permutation(split.indices)[: count * size]
        loader = data_lib.make_loader(split.dataset.images, split.dataset.masks, picks, size, shuffle=False)
        return (loader[i][0] for i in range(len(loader)))

    return [PreciseBatchNorm(batches_for, validated=data.val is not None, evaluation_weights=evaluation_weights)]
