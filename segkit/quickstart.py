"""The main job on built-in data: generate the synthetic city, prepare it, draw a sample figure, then train
U-Net-R34 and PSPNet-R34 briefly on it (CPU minutes) and write and print their comparison."""

import shutil
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from segkit import data
from segkit.files import atomic_path
from segkit.viz import sample_grid

QUICKSTART_MODELS = ("unet-r34_synthetic_128x128", "pspnet-r34_synthetic_128x128")  # shipped configs
SAMPLE_ROWS = 4
SAMPLE_DPI = 90


def make_data(out, count: int = 160, seed: int = 0) -> Path:
    """Synthetic city pairs in `out/synthetic`, prepared into the cache `out/prepared`; returns the cache folder."""
    out = Path(out)
    pairs, cache = out / "synthetic", out / "prepared"
    # Regenerated from scratch: files left by an earlier, larger --count would otherwise be prepared too.
    shutil.rmtree(pairs, ignore_errors=True)
    data.write_synthetic(pairs, count=count, seed=seed)
    print(f"wrote {count} synthetic pairs (seed {seed}) -> {pairs}")
    manifest = data.prepare("cityscapes-pairs", pairs, cache)
    print(data.format_summary(manifest))
    print(f"prepared {manifest['num_items']} items -> {cache}")
    return cache


def write_samples(dataset, path, rows: int = SAMPLE_ROWS, seed: int = 0) -> Path:
    """An image | label-overlay figure of `rows` random items of a prepared dataset, saved as a small PNG."""
    picks = np.sort(np.random.default_rng(seed).choice(len(dataset), size=min(rows, len(dataset)), replace=False))
    fig = sample_grid(dataset.images[picks], dataset.masks[picks], dataset.colors, dataset.classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(SAMPLE_DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    picture = _palette_image(np.asarray(canvas.buffer_rgba())[..., :3], dataset.colors)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", optimize=True)
    return path


def _palette_image(rgb: np.ndarray, exact_colors: np.ndarray) -> Image.Image:
    """A 256-colour PNG image (a third of the bytes of full colour) that keeps the legend's class colours exact."""
    image = Image.fromarray(rgb)
    adaptive = image.quantize(256 - len(exact_colors)).getpalette()[: 3 * (256 - len(exact_colors))]
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.asarray(exact_colors, np.uint8).ravel().tolist() + adaptive)
    return image.quantize(palette=palette, dither=Image.Dither.NONE)


def train_and_compare(out, pairs, epochs: int | None = None) -> dict[str, Path]:
    """Trains each model of QUICKSTART_MODELS on the synthetic `pairs` into `out/runs`, then compares them in `out/comparison`."""
    import segkit  # the training API loads Keras: imported only when training starts
    from segkit.workflows import compare

    # data.path names the pairs just written, so the configs' synthetic city is taken from there, not generated again.
    overrides = {"data.path": str(pairs), "data.cache": str(Path(out) / "cache")}
    if epochs is not None:
        overrides["train.epochs"] = epochs
    run_dirs = [segkit.train(name, overrides=overrides, runs_dir=Path(out) / "runs").path for name in QUICKSTART_MODELS]
    comparison = segkit.compare(run_dirs, out=Path(out) / "comparison")
    print(compare.table_text(comparison["table"]))
    return {"runs": run_dirs, "report": comparison["report"]}


def run(out, count: int = 160, seed: int = 0, epochs: int | None = None, train: bool = False) -> dict[str, Path]:
    """The data part of `segkit quickstart`; with train=True (as the command runs it) also the training and comparison.

    Returns the paths it wrote.
    """
    out = Path(out)
    cache = make_data(out, count, seed)
    samples = write_samples(data.load_prepared(cache), out / "samples.png", seed=seed)
    print(f"sample figure ({samples.stat().st_size // 1024} KiB) -> {samples}")
    written = {"synthetic": out / "synthetic", "prepared": cache, "samples": samples}
    if train:
        written.update(train_and_compare(out, out / "synthetic", epochs))
    return written
