"""The synthetic city: deterministic, written in the Cityscapes-pairs format, labels aligned with the photo."""

import cv2
import numpy as np
import pytest

from segkit.data import synthetic_scene, write_synthetic
from segkit.data.palette import CITYSCAPES_LABELS, IGNORE_INDEX
from segkit.errors import SegkitError



def _decode_label_half(bgr_half: np.ndarray) -> np.ndarray:
    """Brute force: nearest official colour (void colours included) for every pixel, then its trainId."""
    colors = np.array([l.color for l in CITYSCAPES_LABELS], np.int32)
    train_ids = np.array([l.train_id for l in CITYSCAPES_LABELS], np.uint8)
    rgb = bgr_half[..., ::-1].reshape(-1, 1, 3).astype(np.int32)
    nearest = ((rgb - colors[None]) ** 2).sum(-1).argmin(1)
    return train_ids[nearest].reshape(bgr_half.shape[:2])


def test_same_seed_same_files_other_seed_other_scenes(tmp_path):
    a = write_synthetic(tmp_path / "a", 3, seed=7)
    b = write_synthetic(tmp_path / "b", 3, seed=7)
    c = write_synthetic(tmp_path / "c", 3, seed=8)
    assert [p.name for p in a] == ["1.jpg", "2.jpg", "3.jpg"]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b))
    assert all(pa.read_bytes() != pc.read_bytes() for pa, pc in zip(a, c))
    # No temp files left; the marker that lets a later call replace this set is the only other entry.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".segkit-synthetic.json", "1.jpg", "2.jpg", "3.jpg"]


def test_scenes_differ_from_each_other():
    masks = [synthetic_scene(i, seed=0, size=(64, 96))[1] for i in range(4)]
    assert all((masks[i] != masks[j]).mean() > 0.05 for i in range(4) for j in range(i + 1, 4))


def test_composite_layout_and_label_colours_decode_back(tmp_path):
    size = (96, 128)
    paths = write_synthetic(tmp_path, 4, seed=3, size=size)
    for i, path in enumerate(paths, start=1):
        composite = cv2.imread(str(path))
        assert composite.shape == (96, 256, 3)
        photo, mask = synthetic_scene(i, seed=3, size=size)
        # The left half is the photo (JPEG-compressed), the right half its label in official colours.
        assert np.abs(composite[:, :128, ::-1].astype(int) - photo).mean() < 6
        decoded = _decode_label_half(composite[:, 128:])
        assert (decoded == mask).mean() > 0.99, f"{path.name}: labels do not decode back to the generated mask"


def test_scene_covers_street_classes():
    seen = set()
    for i in range(40):
        seen |= set(np.unique(synthetic_scene(i, seed=1, size=(96, 96))[1]).tolist())
    # road sidewalk building pole traffic-light sign vegetation terrain sky person car, and ignore (ego vehicle)
    assert {0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13, IGNORE_INDEX} <= seen


def _features(photo: np.ndarray) -> np.ndarray:
    """Per pixel: local mean colour, local contrast (texture) and image row."""
    x = photo.astype(np.float32)
    mean = cv2.blur(x, (5, 5))
    contrast = np.sqrt(np.maximum(cv2.blur(x * x, (5, 5)) - mean * mean, 0)).mean(-1, keepdims=True)
    rows = np.broadcast_to(np.linspace(0, 255, photo.shape[0], dtype=np.float32)[:, None, None], contrast.shape)
    return np.concatenate([mean, 3 * contrast, rows], -1).reshape(-1, 5).astype(np.float64)


def test_photo_is_aligned_with_and_predictive_of_the_labels():
    """A nearest-class-mean classifier on simple pixel features, fitted on some scenes, labels unseen scenes.

    A photo shifted or flipped against its mask, or classes without their own look, would fail this.
    """
    size = (96, 96)
    train = [synthetic_scene(i, seed=5, size=size) for i in range(12)]
    test = [synthetic_scene(i, seed=5, size=size) for i in range(100, 106)]
    x = np.concatenate([_features(p) for p, _ in train])
    y = np.concatenate([m.ravel() for _, m in train])
    classes = np.array([c for c in np.unique(y) if c != IGNORE_INDEX and (y == c).sum() > 200])
    means = np.stack([x[y == c].mean(0) for c in classes])

    def accuracy(photo, mask):
        pred = classes[((_features(photo)[:, None] - means[None]) ** 2).sum(-1).argmin(1)].reshape(mask.shape)
        valid = mask != IGNORE_INDEX
        return (pred[valid] == mask[valid]).mean()

    labels = np.concatenate([m[m != IGNORE_INDEX] for _, m in test])
    majority = np.bincount(labels).max() / labels.size
    aligned = np.mean([accuracy(p, m) for p, m in test])
    flipped = np.mean([accuracy(p[:, ::-1], m) for p, m in test])
    shifted = np.mean([accuracy(np.roll(p, 8, axis=1), m) for p, m in test])
    assert aligned > majority + 0.2
    assert aligned > max(flipped, shifted) + 0.1


@pytest.mark.parametrize("count, size", [(0, (64, 64)), (-2, (64, 64)), (2.5, (64, 64)), (2, (8, 64)), (2, "big"), (2, (64, 4097))])
def test_bad_arguments_raise_one_line_errors(tmp_path, count, size):
    with pytest.raises(SegkitError) as err:
        write_synthetic(tmp_path / "out", count, size=size)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_out_must_not_be_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(SegkitError, match="file.txt"):
        write_synthetic(target, 1)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_folder_holding_other_files_is_refused_and_kept(tmp_path):
    real = tmp_path / "pairs"
    real.mkdir()
    (real / "1.jpg").write_bytes(b"a real Cityscapes pair")
    (real / "notes.txt").write_text("mine")
    with pytest.raises(SegkitError, match=r"pairs: holds files not written by segkit data synth \(1\.jpg, notes\.txt\)") as err:
        write_synthetic(real, 3)
    assert "\n" not in str(err.value)
    assert _snapshot(real) == {"1.jpg": b"a real Cityscapes pair", "notes.txt": b"mine"}


def test_earlier_synthetic_set_is_replaced_whole(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, 5, seed=1, size=(32, 32))
    fresh = write_synthetic(tmp_path / "fresh", 3, seed=2, size=(32, 32))
    paths = write_synthetic(out, 3, seed=2, size=(32, 32))
    assert sorted(p.name for p in out.glob("*.jpg")) == ["1.jpg", "2.jpg", "3.jpg"]  # 4 and 5 of the old set are gone
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in fresh]


def test_synthetic_set_with_a_file_added_is_refused(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, 2, size=(32, 32))
    (out / "7.jpg").write_bytes(b"added by hand")
    before = _snapshot(out)
    with pytest.raises(SegkitError, match=r"synth: holds files not written by segkit data synth \(7\.jpg\)"):
        write_synthetic(out, 2, size=(32, 32))
    assert _snapshot(out) == before


def test_a_real_file_saved_under_a_synthetic_name_is_refused_and_kept(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, 3, size=(32, 32))
    (out / "1.jpg").write_bytes(b"a real photo copied over scene 1")
    before = _snapshot(out)
    with pytest.raises(SegkitError, match=r"synth: .*1\.jpg.* changed since segkit data synth wrote") as err:
        write_synthetic(out, 3, size=(32, 32))
    assert "\n" not in str(err.value)
    assert _snapshot(out) == before


def test_a_set_cut_short_by_a_kill_is_still_replaceable(tmp_path, monkeypatch):
    from segkit import files

    out = tmp_path / "synth"
    write_synthetic(out, 2, seed=1, size=(32, 32))
    real_write = files.write_bytes
    written = []

    def killed_after_two(path, data):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, data)

    monkeypatch.setattr(files, "write_bytes", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(out, 4, seed=2, size=(32, 32))
    monkeypatch.undo()
    paths = write_synthetic(out, 4, seed=2, size=(32, 32))
    fresh = write_synthetic(tmp_path / "fresh", 4, seed=2, size=(32, 32))
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in fresh]


def test_a_read_only_or_file_destination_is_one_line_before_any_scene(read_only_folder, tmp_path, monkeypatch):
    def no_scene(*args, **kwargs):
        raise AssertionError("a scene was drawn before the destination was checked")

    monkeypatch.setattr("segkit.data.synth.synthetic_scene", no_scene)
    with pytest.raises(SegkitError, match=r"read-only/set cannot be written \(in .*read-only\): Read-only file system"):
        write_synthetic(read_only_folder / "set", 2, size=(32, 32))
    (tmp_path / "plain").write_text("x")
    with pytest.raises(SegkitError, match=r"plain/set cannot be created: .*plain is a file, not a folder"):
        write_synthetic(tmp_path / "plain" / "set", 2, size=(32, 32))
