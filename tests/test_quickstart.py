"""`segkit quickstart` on a few synthetic pairs: the pairs, a cache that loads, and a small sample figure."""

import json
from pathlib import Path

from PIL import Image

from segkit import quickstart
from segkit.data import load_prepared, synthetic_scene


def test_run_writes_pairs_cache_and_sample_figure(tmp_path, capsys):
    out = tmp_path / "qs"
    (out / "synthetic").mkdir(parents=True)
    (out / "synthetic" / "99.jpg").write_bytes(b"left from an earlier, larger run")
    paths = quickstart.run(out, count=6, seed=2)
    assert sorted(p.name for p in paths["synthetic"].glob("*.jpg")) == [f"{i}.jpg" for i in range(1, 7)]
    dataset = load_prepared(paths["prepared"])
    assert len(dataset) == 6 and dataset.images.shape[1:] == (256, 256, 3)
    # The cache holds the generated scenes: labels decode back to the generator's masks (JPEG edges aside).
    items = json.loads((paths["prepared"] / "manifest.json").read_text())["items"]
    first = [Path(name).stem for name in items].index("1")
    assert (dataset.masks[first] == synthetic_scene(1, seed=2)[1]).mean() > 0.97
    with Image.open(paths["samples"]) as figure:
        assert figure.format == "PNG" and figure.width > 300
    assert paths["samples"].stat().st_size < 300_000
    printed = capsys.readouterr().out
    assert str(paths["samples"]) in printed and str(paths["prepared"]) in printed
