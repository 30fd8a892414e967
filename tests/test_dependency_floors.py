"""requirements.txt and pyproject.toml never allow a dependency below the security minimum docs/models.md lists,
and the installed packages meet it."""

import importlib.metadata
import re
import tomllib

import pytest

from support import REPO


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _documented_minimums() -> dict:
    """The 'package | minimum' table of docs/models.md."""
    text = (REPO / "docs" / "models.md").read_text()
    table = text.split("| package | minimum |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| ([\w.-]+) \| ([\d.]+) \|$", table, flags=re.M)
    return {name: value for name, value in rows}


def _floors(requirements) -> dict:
    """{package: its >= floor, or None when it has none}, from requirement strings such as 'keras>=3.14,<3.16'."""
    floors = {}
    for line in requirements:
        requirement = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
        if not requirement or not match:
            continue
        lower = re.search(r"(>=|==|~=)\s*([\d.]+)", match[3])
        floors[match[1].lower()] = lower[2] if lower else None
    return floors


def _requirements_txt() -> dict:
    return _floors((REPO / "requirements.txt").read_text().splitlines())


def _pyproject() -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project.get("optional-dependencies", {}).values() for r in group]
    return _floors(project["dependencies"] + extras)


def test_the_documented_minimums_include_keras_past_the_tfsmlayer_bypass():
    minimums = _documented_minimums()
    assert set(minimums) == {"keras", "tensorflow-cpu", "pillow", "opencv-python-headless", "h5py", "onnx"}
    assert _version(minimums["keras"]) >= (3, 14)  # CVE-2026-1462, the latest safe_mode bypass


@pytest.mark.parametrize("source, floors", [("requirements.txt", _requirements_txt), ("pyproject.toml", _pyproject)])
def test_no_dependency_file_allows_less_than_the_documented_minimum(source, floors):
    declared = floors()
    too_low = {name: declared[name] for name, minimum in _documented_minimums().items()
               if name in declared and (declared[name] is None or _version(declared[name]) < _version(minimum))}
    assert not too_low, f"{source} allows versions below the documented minimum: {too_low}"
    assert "keras" in declared  # the floor that matters most may not be dropped from either file


def test_pyproject_requires_the_python_the_floors_need():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert _version(requires) >= (3, 11)  # Keras 3.14 and Pillow 13 need Python 3.11


def test_the_installed_packages_meet_the_minimums():
    installed = {name: importlib.metadata.version(name) for name in _documented_minimums()}
    below = {name: v for name, v in installed.items() if _version(v) < _version(_documented_minimums()[name])}
    assert not below, f"installed below the documented minimum: {below}"
