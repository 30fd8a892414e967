"""The notebooks' helpers in segkit.notebook: model_stats, find_finished; and the rule that only that module
touches a notebook environment (google.colab, IPython) and nothing in segkit imports it."""

import ast
from pathlib import Path

import pytest

import segkit
from segkit import notebook
from segkit.errors import SegkitError
from segkit.workflows import config as config_lib
from segkit.workflows import runs

PACKAGE = Path(segkit.__file__).parent
NOTEBOOK_ENVIRONMENTS = ("google.colab", "IPython")


def _imported_modules(path: Path) -> set[str]:
    """Every module an `import x` / `from x import y` statement in `path` names (at any depth, lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_workflow_module_imports_a_notebook_environment():
    offenders = {path.name: sorted(name for name in _imported_modules(path)
                                   if any(name == env or name.startswith(f"{env}.") for env in NOTEBOOK_ENVIRONMENTS))
                 for path in sorted((PACKAGE / "workflows").glob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_nothing_in_segkit_imports_the_notebook_module():
    importers = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
                 if path.name != "notebook.py" and "segkit.notebook" in _imported_modules(path)]
    assert importers == []


def test_model_stats_counts_the_shipped_unet_as_the_reference_does():
    # sm.Unet("resnet34", classes=20) has 24,458,909 parameters (tests/test_models_unet.py); its head is a 3x3
    # convolution from 16 channels, 16 * 9 + 1 = 145 parameters per class, so 19 classes have 145 fewer.
    stats = notebook.model_stats("unet-r34_cityscapes-pairs_256x256")
    assert stats["params"] == 24_458_909 - 145 and stats["size"] == (256, 256)
    quarter = notebook.model_stats(config_lib.load("unet-r34_cityscapes-pairs_256x256", {"data.size": [128, 128]}))
    assert quarter["params"] == stats["params"]  # a fully convolutional model: FLOPs follow the pixels, params do not
    assert quarter["gflops"] == pytest.approx(stats["gflops"] / 4, rel=1e-9)


def test_find_finished_takes_the_newest_finished_run_of_that_config_with_those_values(tmp_path):
    def make(name, size, status="finished", metrics=True):
        run = runs.Run.create(tmp_path, config_lib.load({"name": name, "data": {"path": "x", "size": size}}))
        run.write_state({**run.state, "status": status})
        if metrics:
            runs.write_json(run.file(runs.METRICS), {"miou": 0.5})
        return run.path

    small = make("cfg", [32, 32])
    large = make("cfg", [64, 64])
    make("cfg", [32, 32], status="created")  # newer, unfinished
    make("cfg", [32, 32], metrics=False)  # stopped before its metrics were written
    make("cfg-1000", [32, 32])  # another config whose name starts the same
    (tmp_path / "cfg-damaged").mkdir()
    assert notebook.find_finished(tmp_path, "cfg").path == large
    assert notebook.find_finished(tmp_path, "cfg", {"data.size": [32, 32]}).path == small
    assert notebook.find_finished(tmp_path, "cfg", {"data.size": [16, 16]}) is None
    assert notebook.find_finished(tmp_path / "nothing-here", "cfg") is None


def test_train_step_seconds_times_the_step_at_the_configs_label_stride(monkeypatch):
    from segkit.models import strided

    strides = []
    real = strided.strided_logits
    monkeypatch.setattr(notebook.models, "strided_logits", lambda model, stride: strides.append(stride) or real(model, stride))
    seconds = notebook.train_step_seconds("fastscnn_cityscapes-pairs_256x256_cpu-35min",
                                          {"data.size": [64, 64], "train.batch_size": 2}, steps=1)
    # the shipped recipe scores every 4th pixel: 16x16 logits against 16x16 masks (a 64x64 mask would not fit them)
    assert strides == [4] and seconds > 0
