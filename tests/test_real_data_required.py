"""Under CI=true a missing ../shared/data fails the run; elsewhere the real-data tests skip, saying where they looked."""

import os
import subprocess
import sys

import pytest

from support import REPO, require_shared_data


def test_missing_data_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    missing = tmp_path / "no-data"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-data"):
        require_shared_data(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-data.*CI=true"):
        require_shared_data(missing)
    missing.mkdir()
    assert require_shared_data(missing) == missing


def test_notebooks_need_the_real_camvid_slice_under_ci(tmp_path):
    # The pairs notebooks smoke-run on the synthetic city by design (their learning check needs a learnable
    # task); CamVid has no stand-in, so under CI=true its absence stops the run instead of skipping 05.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEGKIT_NB_")}
    # SEGKIT_NB_RUNS away from the checkout: loading the conftest empties its runs folder.
    env.update(CI="true", SEGKIT_SHARED_DATA=str(tmp_path / "no-data"), SEGKIT_NB_RUNS=str(tmp_path / "runs"))
    code = "import runpy, sys; runpy.run_path(sys.argv[1]); print('loaded')"
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "notebooks" / "conftest.py")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "loaded" not in proc.stdout
    assert f"{tmp_path / 'no-data' / 'camvid11'} not found" in proc.stderr
