"""`segkit.evaluate`: a trained model's per-class IoU table and means on any dataset segkit reads.

Every score is given twice: over all labelled pixels, and over the boundary band only (the labelled pixels
within `segkit.metrics.BOUNDARY_WIDTH` pixels of another class, at the labels' resolution), where
segmentation models err most.
"""

import json

import cv2
import numpy as np

from segkit import data as data_lib
from segkit import files, metrics, models
from segkit.errors import SegkitError
from segkit.workflows import datasets
from segkit.workflows.loading import (check_classes, checked_size, fed_size, load_model, num_classes_of, trained_classes,
                                     window_for)


def confusion(model, images, masks, indices, *, num_classes, batch_size=8, tta=None,
              input_size=None) -> tuple[np.ndarray, np.ndarray]:
    """The int64 confusion matrices of `model` over dataset items `indices`, scored at the masks' size:
    (over all labelled pixels, over the boundary band's pixels only; see segkit.metrics.boundary_band).

    input_size: None feeds the images as they are: smaller ones are padded to the model's input and cropped back
    (segkit.models.predict_probabilities), larger ones predicted in overlapping tiles of the model's input size.
    (H, W) feeds them resized to that size (the size the model was trained at) and scores the probabilities
    resized back to the masks' size (see `classes_at`).
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    boundary_cm = np.zeros_like(cm)
    order = np.sort(np.asarray(indices))  # sorted reads are sequential on a memory-mapped cache
    window = window_for(model, input_size or images.shape[1:3])
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        predicted = classes_at(model, np.asarray(images[chunk]), input_size=input_size, tta=tta, window=window,
                               batch_size=batch_size)
        truth = np.asarray(masks[chunk])
        cm += metrics.confusion_matrix(truth, predicted, num_classes)
        band_truth = np.where(metrics.boundary_band(truth), truth, 255)  # outside the band: void, not counted
        boundary_cm += metrics.confusion_matrix(band_truth, predicted, num_classes)
    return cm, boundary_cm


def classes_at(model, images, *, input_size=None, tta=None, window=None, batch_size=8) -> np.ndarray:
    """Predicted classes (B, H, W) uint8 of images (B, H, W, 3) at their own size, the model fed at `input_size`.

    The images are resized to `input_size` (H, W) as data preparation resizes photos (segkit.data.resize_image),
    so a model sees what it was trained on; its class probabilities are resized back bilinearly before the argmax.
    None, or the images' own size, feeds them unchanged.
    """
    size = images.shape[1:3]
    resized = input_size is not None and tuple(input_size) != tuple(size)
    fed = np.stack([data_lib.resize_image(image, input_size) for image in images]) if resized else images
    probs = models.predict_probabilities(model, fed, tta=tta, window=window, batch_size=batch_size)
    if not resized:
        return probs.argmax(-1).astype(np.uint8)
    return np.stack([_resized_argmax(p, size) for p in probs])


def _resized_argmax(probs: np.ndarray, size) -> np.ndarray:
    """The argmax over classes of `probs` (h, w, classes) resized bilinearly to `size`, one class at a time: the
    full-size maps of all classes never exist together (19 of a 12-megapixel photo would take 0.9 GB)."""
    best = np.full(size, -np.inf, np.float32)
    classes = np.zeros(size, np.uint8)  # masks are uint8 with 255 = ignore, so there are at most 255 classes
    for index in range(probs.shape[-1]):
        score = cv2.resize(np.ascontiguousarray(probs[..., index]), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        classes[score > best] = index  # strictly greater: a tie keeps the lower class, as argmax does
        np.maximum(best, score, out=best)
    return classes


def summarize(cm: np.ndarray, boundary_cm: np.ndarray, classes) -> dict:
    """metrics.json content: the means, per-class IoU (null where a class cannot be scored) and the matrix, then
    mIoU and pixel accuracy over the boundary band (null when no label edge was seen) and its matrix."""
    result = metrics.scores(cm)
    boundary = metrics.scores(boundary_cm) if boundary_cm.sum() else {"miou": np.nan, "pixel_accuracy": np.nan}
    return {
        "miou": result["miou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "mean_accuracy": result["mean_accuracy"],
        "fw_iou": result["fw_iou"],
        "per_class_iou": {name: _or_none(v) for name, v in zip(classes, result["iou"])},
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
        "boundary_width": metrics.BOUNDARY_WIDTH,
        "boundary_miou": _or_none(boundary["miou"]),
        "boundary_pixel_accuracy": _or_none(boundary["pixel_accuracy"]),
        "boundary_confusion_matrix": boundary_cm.tolist(),
    }


def evaluate(model_path, data, *, format=None, split=None, classes="train", tta=None, json_path=None,
             batch_size=8, cache="data/prepared", input_size=None, max_color_distance=None, verbose=True) -> dict:
    """Scores the model at `model_path` (a run folder or .keras file) on dataset `data` (prepared folder, or raw with `format`).

    input_size: (H, W) feeds the model the images resized to it and scores at the labels' own size (see
    `confusion`); None feeds them at the size the model was trained at (`loading.fed_size`), as they are for a
    model file of no fixed input that records no size.
    max_color_distance: for raw cityscapes-pairs data, the labels' colour tolerance (`segkit.data.open_reader`).
    Returns the metrics.json-style dict (miou, pixel_accuracy, mean_accuracy, fw_iou, per_class_iou,
    confusion_matrix, and boundary_miou, boundary_pixel_accuracy, boundary_confusion_matrix over the band of
    boundary_width pixels around label edges); prints the per-class table and both sets of means when
    `verbose`; writes the dict to `json_path` if given.
    """
    check_tta(tta)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SegkitError(f"batch size must be a positive integer, got {batch_size!r}")
    input_size = checked_size(input_size, "input size")
    if json_path is not None:
        files.check_writable_file(json_path, "--json")  # before the evaluation, which may take an hour
    net, run = load_model(model_path)
    input_size = fed_size(net, run, input_size)
    dataset, path = datasets.open_dataset(data, format=format, split=split, classes=classes,
                                          max_color_distance=max_color_distance, cache=cache)
    datasets.check_num_classes(num_classes_of(net), len(dataset.classes), model_path, path)
    check_classes(model_path, trained_classes(model_path), path, dataset.classes)
    count = int(dataset.images.shape[0])
    cm, boundary_cm = confusion(net, dataset.images, dataset.masks, np.arange(count), num_classes=len(dataset.classes),
                   batch_size=batch_size, tta=tta, input_size=input_size)
    result = {"model": str(model_path), "data": str(path), "num_items": count, "tta": tta,
              "input_size": list(input_size or dataset.images.shape[1:3]), **summarize(cm, boundary_cm, dataset.classes)}
    if verbose:
        print(metrics.per_class_table(cm, dataset.classes).to_string(float_format=lambda v: f"{v:.4f}"))
        resized = input_size is not None and list(input_size) != list(dataset.images.shape[1:3])
        fed = f", fed at {input_size[0]}x{input_size[1]}" if resized else ""
        print(f"mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  ({count} images, {path}{fed})")
        print(f"boundary ({metrics.BOUNDARY_WIDTH} px band around label edges, {boundary_cm.sum()} pixels): "
              f"mIoU {_text(result['boundary_miou'])}  pixel accuracy {_text(result['boundary_pixel_accuracy'])}")
    if json_path is not None:
        with files.writing_into(json_path, "--json"):
            files.write_text(json_path, json.dumps(result, indent=2) + "\n")
    return result


def check_tta(tta) -> None:
    """Refuses test-time augmentation other than None or "flip" (before any model is loaded).

    Args:
        tta: the requested test-time augmentation.
    """
    if tta not in (None, "flip"):
        raise SegkitError(f"tta={tta!r} is not supported; use flip or none")


def _or_none(value):
    return None if np.isnan(value) else float(value)


def _text(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
