"""Optimizers from a config: Adam (as in the reference notebooks), AdamW, SGD (+ Nesterov), optional weight EMA;
a constant, poly or one-cycle learning rate after an optional linear warm-up.

The schedule is a function of the optimizer's step count over a length of train.epochs x steps per epoch,
so a resumed run continues it exactly. With train.max_minutes (optimizer.span auto or budget) the length
instead follows the time budget: it is a variable of the optimizer's state that callbacks.BudgetSpan
re-estimates from the measured step time, so the decay ends at the step where the budget runs out.
"""

import math

import keras
from keras import ops

from segkit.workflows.config import OPTIMIZERS

ONECYCLE_START = 1 / 25  # one-cycle starts (and warms up from) lr / 25, as PyTorch's OneCycleLR (div_factor=25)


@keras.saving.register_keras_serializable(package="segkit")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `warmup_steps`, then `kind` over the remaining steps of `total_steps`.

    warm-up (step s < W): lr * (s + 1) / W (constant, poly), lr * (f + (1 - f) (s + 1) / W) (onecycle, f = 1/25).
    after it, with t = min(s - W, T) / T and T = max(total_steps - W, 1):
      constant: lr;  poly (PSPNet): lr * (1 - t) ** power;  onecycle: lr * (1 + cos(pi t)) / 2 (cosine to 0).

    `total_steps` is held in a non-trainable variable read inside the train step, so it can change during
    training (callbacks.BudgetSpan); get_config saves its value at that moment. Warm-up steps stay fixed.
    """

    def __init__(self, learning_rate, total_steps, kind="constant", warmup_steps=0, power=0.9):
        self.learning_rate = float(learning_rate)
        total_steps = max(1, int(total_steps))
        self.kind = kind
        self.warmup_steps = min(int(warmup_steps), total_steps - 1)
        self.power = float(power)
        self.total_steps = keras.Variable(float(total_steps), dtype="float32", trainable=False, autocast=False,
                                          aggregation="only_first_replica", name="schedule_total_steps")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(self.warmup_steps)
        decay_steps = ops.maximum(self.total_steps - warm, 1.0)  # a budget estimate may fall inside the warm-up
        t = ops.clip((step - warm) / decay_steps, 0.0, 1.0)
        if self.kind == "poly":
            after = ops.power(1.0 - t, self.power)
        elif self.kind == "onecycle":
            after = 0.5 * (1.0 + ops.cos(math.pi * t))
        else:
            after = ops.ones_like(t)
        if self.warmup_steps == 0:
            return self.learning_rate * after
        start = ONECYCLE_START if self.kind == "onecycle" else 0.0
        rising = start + (1.0 - start) * ops.minimum(step + 1.0, warm) / warm
        return self.learning_rate * ops.where(step < warm, rising, after)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": round(float(ops.convert_to_numpy(self.total_steps))), "kind": self.kind,
                "warmup_steps": self.warmup_steps, "power": self.power}


def spans_budget(cfg: dict) -> bool:
    """Whether the learning-rate schedule's length follows train.max_minutes (optimizer.span) rather than train.epochs."""
    span, timed = cfg["optimizer"]["span"], cfg["train"]["max_minutes"] is not None
    return span == "budget" or (span == "auto" and timed and cfg["optimizer"]["schedule"] != "constant")


def schedule_length(optimizer) -> keras.Variable:
    """The variable holding the length in steps of the WarmupSchedule of an optimizer `build` made."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # mixed precision wraps it in a LossScaleOptimizer
    return inner._learning_rate.total_steps


def build(spec: dict, total_steps: int, *, budget=False) -> keras.optimizers.Optimizer:
    """The optimizer `spec` (the config's `optimizer` section) names; `total_steps` sizes the schedule.

    budget: the schedule's length will be re-estimated during training (spans_budget); its variable then
    becomes optimizer state, saved in checkpoints and passed to the (JAX: pure) train step like the step count.
    """
    learning_rate = spec["learning_rate"]
    if spec["schedule"] != "constant" or spec["warmup"] > 0:
        learning_rate = WarmupSchedule(learning_rate, total_steps, spec["schedule"],
                                       warmup_steps=round(spec["warmup"] * total_steps), power=spec["power"])
    optimizer = _optimizer(spec, learning_rate)
    if budget:
        optimizer._track_variable(learning_rate.total_steps)  # before build: it follows the step count in the state
    return optimizer


def _optimizer(spec: dict, learning_rate) -> keras.optimizers.Optimizer:
    ema = {} if spec["ema"] is None else {"use_ema": True, "ema_momentum": spec["ema"]}
    name = spec["name"]
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **ema)
    if name == "adamw":
        decay = {} if spec["weight_decay"] is None else {"weight_decay": spec["weight_decay"]}
        return keras.optimizers.AdamW(learning_rate, **decay, **ema)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=spec["momentum"], nesterov=spec["nesterov"],
                                    weight_decay=spec["weight_decay"], **ema)
    raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")  # config validation stops this earlier
