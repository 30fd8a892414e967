"""The callback that makes a run folder safe to kill: after each epoch, history, best model, checkpoint, commit.

Order matters. The new checkpoint is written under a new name (atomically), and a better model whole
beside best.keras; then state.json is replaced to name the checkpoint (the commit), the new best model
renamed to best.keras, and the previous checkpoint deleted. A run killed at any moment therefore has a
state.json naming a complete checkpoint, and loses at most one epoch; a full disk leaves it as it was.
"""

import contextlib
import math
import sys
import time

import keras
import numpy as np
import pandas as pd

from segkit import files
from segkit.models import batchnorm
from segkit.workflows import loading, runs

MONITOR = "val_miou"  # best.keras is the model with the highest validation mIoU (the last one in a run without validation)
clock = time.perf_counter  # the run's clock in seconds; tests put a fake one in its place


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation (so also before the epoch's checkpoint and best.keras are saved), re-estimates the
    BatchNorm moving statistics with the weights as they are now, from the input batches `batches_for(epoch)` yields.

    validated: False for a run without validation, which re-estimates at each epoch's end instead (before
    RunRecorder saves), with `evaluation_weights` (EmaWeights.swapped) in place: those are the weights best.keras keeps.
    """

    def __init__(self, batches_for, *, validated=True, evaluation_weights=None):
        super().__init__()
        self.batches_for = batches_for
        self.validated = validated
        self.evaluation_weights = evaluation_weights or contextlib.nullcontext
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_test_begin(self, logs=None):
        batchnorm.reestimate_statistics(self.model, self.batches_for(self.epoch))

    def on_epoch_end(self, epoch, logs=None):
        if not self.validated:
            with self.evaluation_weights():
                batchnorm.reestimate_statistics(self.model, self.batches_for(epoch))


class RunRecorder(keras.callbacks.Callback):
    def __init__(self, run: runs.Run, inference_model, state: dict, *, max_seconds=None, evaluation_weights=None):
        super().__init__()
        # A context manager factory that puts the weights to evaluate in place (EmaWeights.swapped) for best.keras.
        self.evaluation_weights = evaluation_weights or contextlib.nullcontext
        self.run = run
        self.inference_model = inference_model  # shares weights with the trained model; what best.keras holds
        self.state = state
        self.max_seconds = max_seconds
        self.non_finite_at = None  # (epoch, step) where the loss stopped being finite
        self._epoch_start = None
        self._steps = 0  # steps run in the current epoch: the last one is partial when the time budget stops it
        self._last_step_at = None  # the clock at the end of the latest training step
        self._out_of_time = False  # the time budget ended training (at the end of an epoch, always)
        self._session_start = None
        self._seconds_before = state["train_seconds"]

    def on_train_begin(self, logs=None):
        self._session_start = clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = clock()

    def on_train_batch_end(self, batch, logs=None):
        self._steps, self._last_step_at = batch + 1, clock()
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.non_finite_at = (len(self.state["history"]) + 1, batch + 1)
            self.model.stop_training = True
        elif self.max_seconds is not None and self.used_seconds(self._last_step_at) >= self.max_seconds:
            # Keras ends the epoch after this step; it is validated and committed like any other.
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.non_finite_at is not None or not all(math.isfinite(float(v)) for v in _scalars(logs).values()):
            self.non_finite_at = self.non_finite_at or (epoch + 1, None)
            self.model.stop_training = True
            return  # nothing from this epoch is saved: the last good checkpoint stays the committed one
        seconds = clock() - self._epoch_start
        # epoch_steps is a full epoch's length: steps < epoch_steps marks an epoch the time budget cut short.
        row = {"epoch": epoch + 1, "steps": self._steps, "epoch_steps": self.params.get("steps") or self._steps,
               **_canonical(_scalars(logs)),
               "learning_rate": _learning_rate(self.model), "seconds": seconds}
        self._commit(row)
        if self.max_seconds is None:
            return
        left, step_seconds = self.max_seconds - self.used_seconds(), (self._last_step_at - self._epoch_start) / self._steps
        # Also when validation and saving used the last of it, or left less than a step, which the decay ending with
        # the budget would give a learning rate of about zero: an epoch of one such step only re-estimates BatchNorm.
        if left < step_seconds:
            self.model.stop_training = self._out_of_time = True
            print(f"time budget of {self.max_seconds / 60:.1f} min reached after step {self._steps}/{row['epoch_steps']} "
                  f"of epoch {epoch + 1}" + ("" if left <= 0 else f" ({left:.1f} s left, less than a step)") + ": stopping")

    def _commit(self, row: dict) -> None:
        # Without validation (data.val: 0) every epoch's weights replace the last: best_miou stays None.
        improved = MONITOR not in row or self.state["best_miou"] is None or row[MONITOR] > self.state["best_miou"]
        checkpoint = self.run.checkpoint_name(row["epoch"])
        with contextlib.ExitStack() as pending:
            with files.atomic_path(self.run.file(checkpoint)) as tmp:
                self.model.save(tmp)
            try:
                if improved:  # written whole now, but becomes best.keras only after the commit (when `pending` closes)
                    best = pending.enter_context(files.atomic_path(self.run.file(runs.BEST)))
                    with self.evaluation_weights():
                        loading.save_model(self.inference_model, best, classes=self.run.dataset["classes"],
                                           colors=self.run.dataset["colors"])
                history = self._commit_state(row, checkpoint, improved)
            except OSError:  # a full disk: the checkpoint this epoch wrote is not committed, and only takes room
                self.run.file(checkpoint).unlink(missing_ok=True)
                raise
        self.run.remove_stale_checkpoints()
        files.write_text(self.run.file(runs.HISTORY), pd.DataFrame(history).to_csv(index=False))

    def _commit_state(self, row: dict, checkpoint: str, improved: bool) -> list:
        """Replaces state.json to name the new checkpoint (the commit point); returns the history it holds."""
        state, epoch = self.state, row["epoch"]
        history = state["history"] + [row]
        new_state = {
            **state,
            "epoch": epoch,
            "checkpoint": checkpoint,
            "history": history,
            "best_miou": row.get(MONITOR) if improved else state["best_miou"],
            "best_epoch": epoch if improved else state["best_epoch"],
            "train_seconds": self.used_seconds(),
            "status": "training",
        }
        self.run.write_state(new_state)
        self.state = new_state
        return history

    @property
    def stopped(self) -> bool:
        """Whether this session ended early: a non-finite loss or the time budget."""
        return self.non_finite_at is not None or self._out_of_time

    def used_seconds(self, at: float | None = None) -> float:
        """Training seconds of the run at clock reading `at` (default: now): earlier sessions and this one, validation
        and saving included."""
        return self._seconds_before + (clock() if at is None else at) - self._session_start


class BudgetSpan(keras.callbacks.Callback):
    """Moves the end of the learning-rate decay to the step where the time budget runs out (optimizer.span: budget).

    Every UPDATE_EVERY steps and at each epoch end it sets the schedule's length `total_steps` (a variable
    of the optimizer state, optim.schedule_length) to steps done + seconds left / seconds per step, bounded
    by steps done + 1 and `max_steps` (train.epochs x steps per epoch). Seconds per step are measured on
    `used_seconds` (RunRecorder.used_seconds: validation and saving included, so their share counts) since
    the SETTLE-th step of this fit, the first ones being slowed by tracing and compilation. A resumed run
    continues from the length its checkpoint saved and the seconds state.json recorded; being driven by
    the clock, it is not bit-exact with an uninterrupted run (epoch-spanned schedules are).
    """

    SETTLE, UPDATE_EVERY = 3, 20

    def __init__(self, total_steps: keras.Variable, max_steps: int, max_seconds: float, used_seconds):
        super().__init__()
        self.total_steps, self.max_steps, self.max_seconds, self.used_seconds = total_steps, max_steps, max_seconds, used_seconds
        self._steps = self._fit_steps = 0
        self._reference = None  # (seconds used, steps done) after SETTLE steps of this fit

    def on_train_begin(self, logs=None):
        self._steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._fit_steps, self._reference = 0, None

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._fit_steps += 1
        if self._fit_steps == self.SETTLE:
            self._reference = (self.used_seconds(), self._steps)
        elif self._fit_steps > self.SETTLE and (self._fit_steps - self.SETTLE) % self.UPDATE_EVERY == 0:
            self._update()

    def on_epoch_end(self, epoch, logs=None):
        self._update()  # before RunRecorder saves the checkpoint, which then holds the new length

    def _update(self) -> None:
        if self._reference is None or self._steps == self._reference[1]:
            return
        used = self.used_seconds()
        per_step = (used - self._reference[0]) / (self._steps - self._reference[1])
        if per_step <= 0:
            return
        total = self._steps + max(1.0, (self.max_seconds - used) / per_step)
        if hasattr(self.model, "jax_state_sync"):  # JAX trains on a copy of the state: put it back, then change it
            self.model.jax_state_sync()
        self.total_steps.assign(float(min(round(total), self.max_steps)))


class EmaWeights(keras.callbacks.Callback):
    """Validates with the optimizer's moving average of the weights (`use_ema=True`) and trains on the raw ones.

    Keras keeps the average in the optimizer and copies it over the weights only when fit ends, so
    validation during fit would see the raw weights. This callback swaps the average in for every
    validation and, through `swapped()`, for saving best.keras; it puts the raw weights back when fit
    ends, so a following fit (the next progressive stage) continues from them. Only trainable weights
    are averaged: BatchNorm's moving statistics are used as they are.
    """

    def __init__(self):
        super().__init__()
        self._raw = None

    @contextlib.contextmanager
    def swapped(self):
        raw = _values(self._variables())
        # Copies, not the averages' own arrays: JAX would donate a shared buffer at the next step and lose the average.
        _assign(self._variables(), _values(self.model.optimizer._model_variables_moving_average))
        try:
            yield
        finally:
            _assign(self._variables(), raw)

    def on_test_begin(self, logs=None):
        self._test = self.swapped()
        self._test.__enter__()

    def on_test_end(self, logs=None):
        self._test.__exit__(None, None, None)

    def on_epoch_end(self, epoch, logs=None):
        self._raw = _values(self._variables())  # before fit's end overwrites them with the average

    def on_train_end(self, logs=None):
        if self._raw is not None:
            _assign(self._variables(), self._raw)

    def _variables(self):
        return self.model.optimizer._trainable_variables


class EpochLog(keras.callbacks.Callback):
    """One plain line per epoch, for a log file: epoch, steps run (fewer than the epoch's when the time budget
    stopped it), training loss and mIoU, validation mIoU, seconds (validation included)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs  # the run's, not this fit's: a progressive stage fits only some of them
        self._steps, self._start = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._start = 0, clock()

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        values = _canonical(_scalars(logs))
        scores = "".join(f"  {label} {values[key]:.4f}" for key, label in
                         (("loss", "loss"), ("miou", "mIoU"), ("val_miou", "val mIoU")) if key in values)
        print(f"epoch {epoch + 1}/{self.epochs}  steps {self._steps}/{self.params['steps']}{scores}  "
              f"{clock() - self._start:.0f} s", flush=True)


class StepsProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, ending an epoch at the steps that ran: 221/335 when the time budget stopped it there,
    where Keras' own bar jumps to 335/335."""

    def on_epoch_end(self, epoch, logs=None):
        self.progbar.update(self.seen, list((logs or {}).items()), finalize=True)


def progress_display(verbose, epochs: int) -> tuple[list, int]:
    """(callbacks, fit's verbose) showing training progress: Keras' bar for a person, plain lines for a log file.

    Args:
        verbose: "auto" (a bar when stdout is a terminal or a notebook, else one line per epoch), 1 (the bar),
            2 (one line per epoch) or 0 (nothing).
        epochs: the run's train.epochs, for "epoch 3/40".
    """
    if verbose == "auto":
        verbose = 1 if _interactive_stdout() else 2
    if verbose == 1:
        return [StepsProgbar()], 1
    return ([EpochLog(epochs)] if verbose == 2 else []), 0


def _interactive_stdout() -> bool:
    """A terminal, or a notebook (Jupyter and Colab print through ipykernel's stream, which is no tty)."""
    stream = sys.stdout
    return stream.isatty() or type(stream).__module__.startswith("ipykernel")


def _values(variables) -> list:
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _assign(variables, values) -> None:
    for var, value in zip(variables, values):
        var.assign(value)


def _canonical(logs: dict) -> dict:
    """Multi-output models log 'logits_miou'; history always says 'miou' (and 'val_miou') for the main output."""
    return {k.replace("logits_miou", "miou"): v for k, v in logs.items()}


def _scalars(logs) -> dict:
    return {k: float(np.asarray(v)) for k, v in (logs or {}).items() if np.ndim(v) == 0}


def _learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
