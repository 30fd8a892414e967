"""Optimizers from a config: Adam (as in the reference notebooks), AdamW, SGD; constant or poly learning rate."""

import keras

from segkit.workflows.config import OPTIMIZERS


def build(spec: dict, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimizer `spec` (the config's `optimizer` section) names; `total_steps` sizes the poly schedule.

    poly is PSPNet's schedule: lr * (1 - step / total_steps) ** power, reaching 0 at the last step.
    It is a serialisable Keras schedule driven by `optimizer.iterations`, so a resumed run continues it.
    """
    learning_rate = spec["learning_rate"]
    if spec["schedule"] == "poly":
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, decay_steps=max(1, total_steps), end_learning_rate=0.0, power=spec["power"]
        )
    name = spec["name"]
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        decay = {} if spec["weight_decay"] is None else {"weight_decay": spec["weight_decay"]}
        return keras.optimizers.AdamW(learning_rate, **decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=spec["momentum"], weight_decay=spec["weight_decay"])
    raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")  # config validation stops this earlier
