"""What a run writes to TensorBoard (TensorFlow backend only): Keras' per-epoch scalars, and after each validation
a few fixed validation pictures (image | truth | prediction in the class colours) and the per-class IoU.

The per-class IoU comes from the confusion matrix of the whole validation pass that training already computes
(the `miou` metric's state right after validation), so it costs no extra prediction; only the pictures are
predicted again. Both go to `tensorboard/validation`, beside Keras' validation scalars.
"""

import contextlib
import importlib.util
import math

import keras
import numpy as np

from segkit import metrics, viz

LOG_DIR = "tensorboard"
PICTURES = 3  # validation items drawn each epoch: the first ones of the validation split, the same every epoch
IMAGE_TAG = "validation_pictures"  # image | truth | prediction
IOU_TAG = "iou/"  # + class name: one scalar per class


def callbacks(run, data, inference_model, evaluation_weights=None) -> list:
    """The TensorBoard callbacks of a training fit; [] (with a note) where TensorBoard cannot be written.

    Args:
        run (segkit.workflows.runs.Run): the run whose folder gets the logs.
        data (segkit.workflows.datasets.TrainingData): the classes, their colours and the validation split, whose
            first PICTURES items are drawn; a run without validation (data.val: 0) logs the training scalars only.
        inference_model (keras.Model): the single-output model, sharing the trained weights.
        evaluation_weights (callable | None): a context manager factory that puts the validated weights in place
            (EmaWeights.swapped), so the pictures show what validation scored.
    """
    if keras.backend.backend() != "tensorflow":
        print(f"note: TensorBoard logs need the TensorFlow backend; skipped on {keras.backend.backend()}")
        return []
    if importlib.util.find_spec("tensorboard") is None:
        print("note: TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
        return []
    folder = run.file(LOG_DIR)
    scalars = keras.callbacks.TensorBoard(log_dir=str(folder), write_graph=False)
    if data.val is None:
        return [scalars]
    picks = np.asarray(data.val.indices[:PICTURES])
    pictures = ValidationSummaries(str(folder / "validation"), np.asarray(data.val.dataset.images[picks]),
                                   np.asarray(data.val.dataset.masks[picks]), data.classes, data.colors, inference_model,
                                   evaluation_weights)
    return [scalars, pictures]


class ValidationSummaries(keras.callbacks.Callback):
    """After each validation, writes the per-class IoU of the validation pass and the fixed pictures' predictions."""

    def __init__(self, log_dir, images, masks, class_names, colors, inference_model, evaluation_weights=None):
        super().__init__()
        import tensorflow as tf  # the TensorFlow backend is running: `callbacks` checked it

        self._summary = tf.summary
        self.writer = tf.summary.create_file_writer(log_dir)
        self.images, self.masks = images, masks
        self.class_names, self.colors = list(class_names), np.asarray(colors, np.uint8)
        self.inference_model = inference_model
        self.evaluation_weights = evaluation_weights or contextlib.nullcontext

    def on_epoch_end(self, epoch, logs=None):
        if "val_loss" not in (logs or {}):
            return  # no validation ran
        iou = metrics.scores(validation_confusion(self.model))["iou"]
        with self.writer.as_default(step=epoch):  # Keras' TensorBoard callback counts epochs from 0 too
            for name, value in zip(self.class_names, iou):
                if not math.isnan(value):  # a class in neither truth nor prediction has no IoU
                    self._summary.scalar(IOU_TAG + name, value)
            self._summary.image(IMAGE_TAG, self.pictures(), max_outputs=len(self.images))
        self.writer.flush()

    def pictures(self) -> np.ndarray:
        """(N, H, 3W, 3) uint8: each picked image beside its truth and the model's prediction, in the class colours."""
        with self.evaluation_weights():
            logits = self.inference_model(self.images.astype("float32"), training=False)
        predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1).astype(np.uint8)
        return np.stack([np.concatenate([image, viz.colorize(mask, self.colors), viz.colorize(pred, self.colors)], axis=1)
                         for image, mask, pred in zip(self.images, self.masks, predictions)])


def validation_confusion(model) -> np.ndarray:
    """The confusion matrix that the compiled `model`'s MeanIoU metric holds: right after a validation pass, that
    pass's over every validation pixel.

    Args:
        model (keras.Model): a model compiled with a `segkit.metrics.MeanIoU` metric.
    """
    for metric in model.metrics:
        for inner in getattr(metric, "metrics", [metric]):  # Keras groups the compiled metrics in one container
            if isinstance(inner, metrics.MeanIoU):
                return inner.confusion()
    raise ValueError(f"model {model.name} was compiled without a segkit MeanIoU metric")
