"""Optimizers from a config: Adam (as in the reference notebooks), AdamW, SGD (+ Nesterov), optional weight EMA;
a constant, poly or one-cycle learning rate after an optional linear warm-up.

The schedule is a function of the optimizer's step count over a length fixed when training starts
(train.epochs x steps per epoch), so a resumed run continues it exactly. A train.max_minutes budget
does not shorten it: with a time budget, set train.epochs to the epochs that fit, or the run stops
with the learning rate still high (history.csv records the rate of every epoch).
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
    after it, with t = min(s - W, T) / T and T = total_steps - W:
      constant: lr;  poly (PSPNet): lr * (1 - t) ** power;  onecycle: lr * (1 + cos(pi t)) / 2 (cosine to 0).
    """

    def __init__(self, learning_rate, total_steps, kind="constant", warmup_steps=0, power=0.9):
        self.learning_rate = float(learning_rate)
        self.total_steps = max(1, int(total_steps))
        self.kind = kind
        self.warmup_steps = min(int(warmup_steps), self.total_steps - 1)
        self.power = float(power)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm, decay_steps = float(self.warmup_steps), float(self.total_steps - self.warmup_steps)
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
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps, "kind": self.kind,
                "warmup_steps": self.warmup_steps, "power": self.power}


def build(spec: dict, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimizer `spec` (the config's `optimizer` section) names; `total_steps` sizes the schedule."""
    learning_rate = spec["learning_rate"]
    if spec["schedule"] != "constant" or spec["warmup"] > 0:
        learning_rate = WarmupSchedule(learning_rate, total_steps, spec["schedule"],
                                       warmup_steps=round(spec["warmup"] * total_steps), power=spec["power"])
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
