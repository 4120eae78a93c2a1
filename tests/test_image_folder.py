"""Image folders (``--dataset folder``) on small PNG and JPEG files written here: decoding, sizes, bad files (skipped
and counted, or errors with strict), layout errors, own splits, and the node's cache (reused, rebuilt when a file
changes, one entry per version)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.data import DatasetError, dataset_info, load_dataset


def _image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pattern(k: int, h: int = 8, w: int = 8, channels: int = 3) -> np.ndarray:
    """A deterministic uint8 image, different for every k."""
    a = (np.arange(h * w * channels).reshape(h, w, channels) * (k + 3) + 17 * k) % 256
    return a.astype(np.uint8) if channels == 3 else a[:, :, 0].astype(np.uint8)


def _folder(root: Path, per_class: int = 6, classes=("cat", "dog")) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _image(root / name / f"{i:02d}.png", _pattern(10 * c + i))
    return root


def _all_inputs(data) -> tuple[np.ndarray, np.ndarray]:
    parts = [data.splits[s].gather() for s in ("train", "val", "test")]
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])


def test_png_and_jpeg_decode_to_the_most_common_size(tmp_path):
    root = _folder(tmp_path / "pets")
    _image(root / "dog" / "big.JPG", np.full((12, 16, 3), 200, np.uint8))  # another size, upper-case extension
    (root / "dog" / "notes.txt").write_text("not an image")
    info = dataset_info("folder", root=root)
    assert info.input_shape == (3, 8, 8) and info.num_classes == 2
    assert any("image size 8x8: the most common of 2 sizes (12 of 13 images)" in n for n in info.notes), info.notes
    data = load_dataset("folder", root=root, normalize=False)
    assert data.classes == ["cat", "dog"] and data.input_shape == info.input_shape and sum(data.sizes().values()) == 13
    x, y = _all_inputs(data)
    assert x.dtype == np.uint8 and x.shape == (13, 3, 8, 8)
    # a PNG of the size is stored exactly, channels first; the JPEG is resized (12x16 -> 8x8 after the crop)
    want = _pattern(10 + 3).transpose(2, 0, 1)
    assert any(np.array_equal(a, want) and label == 1 for a, label in zip(x, y, strict=True))
    jpeg = [a for a in x if np.abs(a.astype(int) - 200).max() <= 3]
    assert len(jpeg) == 1
    assert data.preprocessing["scale"] == 1 / 255 and len(data.preprocessing["mean"]) == 3


def test_declared_size_resizes_and_centre_crops(tmp_path):
    root = tmp_path / "shapes"
    left_right = np.zeros((8, 16), np.uint8)
    left_right[:, 2:14] = 255  # white where a centre crop to a square keeps (with the resize filter's margin)
    for name in ("a", "b"):
        for i in range(5):
            _image(root / name / f"{i}.png", left_right)
    data = load_dataset("folder", root=root, image_size="4", normalize=False)
    x, _ = _all_inputs(data)
    assert x.shape == (10, 1, 4, 4) and (x >= 250).all()
    assert dataset_info("folder", root=root, image_size="6x4").input_shape == (1, 6, 4)


def test_unreadable_and_truncated_images_are_skipped_and_counted_or_errors_with_strict(tmp_path, caplog):
    root = _folder(tmp_path / "bad")
    (root / "cat" / "garbage.jpg").write_bytes(b"this is not a JPEG")
    good = (root / "dog" / "00.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[:len(good) // 2])
    info = dataset_info("folder", root=root)  # the header of the truncated file reads; the garbage's does not
    assert any("1 of 14 images cannot be read and are skipped: cat/garbage.jpg" in n for n in info.notes)
    lines: list[str] = []
    data = load_dataset("folder", root=root, log=lines.append)
    assert sum(data.sizes().values()) == 12
    note = next(n for n in lines if "cannot be read" in n)
    assert "2 of 14 images" in note and "cat/garbage.jpg" in note and "dog/truncated.png" in note
    with pytest.raises(DatasetError, match=r"garbage\.jpg: cannot be read as an image.*strict"):
        dataset_info("folder", root=root, strict=True)
    with pytest.raises(DatasetError, match=r"garbage\.jpg: cannot be read"):  # the cache entry recorded both
        load_dataset("folder", root=root, strict=True)
    (root / "cat" / "garbage.jpg").unlink()
    with pytest.raises(DatasetError, match=r"truncated\.png: cannot be read as an image \(OSError: .*strict"):
        load_dataset("folder", root=root, strict=True, cache_dir=tmp_path / "fresh")


@pytest.mark.parametrize("make, message", [
    (lambda r: (_folder(r), (r / "bird").mkdir()), r"class folder .*bird holds no images"),
    (lambda r: _folder(r, classes=("cat",)), r"a single class folder \(cat\)"),
    (lambda r: (_folder(r), _image(r / "dog" / "grey.png", _pattern(1, channels=1))),
     r"mixes images of different channel counts: 12 with 3 channel\(s\) .* 1 with 1 channel\(s\) \(e\.g\. .*grey\.png"),
    (lambda r: (_folder(r / "train"), _folder(r / "extra")), r"mixes split folders \(train\) with other folders"),
    (lambda r: (_folder(r / "train"), _folder(r / "val", classes=("cat", "cow"))),
     r"val has class folder\(s\) \['cow'\]"),
    (lambda r: _folder(r / "val"), r"has val but no train folder"),
    (lambda r: r.mkdir(), r"has no class sub-folders"),
])
def test_layout_errors_name_the_folder(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    for f in (dataset_info, load_dataset):
        with pytest.raises(DatasetError, match=message):
            f("folder", root=root)
    with pytest.raises(DatasetError, match="'folder' needs root="):
        load_dataset("folder")


def test_train_val_test_folders_are_the_splits(tmp_path):
    _folder(tmp_path / "d" / "train", per_class=5)
    _folder(tmp_path / "d" / "val", per_class=2)
    _folder(tmp_path / "d" / "test", per_class=1, classes=("dog",))  # a split may lack a class
    data = load_dataset("folder", root=tmp_path / "d")
    assert data.sizes() == {"train": 10, "val": 4, "test": 1} and data.y_test.tolist() == [1]
    only_train = tmp_path / "t"
    _folder(only_train / "train", per_class=10)
    assert load_dataset("folder", root=only_train).sizes() == {"train": 13, "val": 3, "test": 4}


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    import workers.data.images as images

    root = _folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    decoded = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a: decoded.append(a[0]) or real(*a))
    first = load_dataset("folder", root=root, cache_dir=cache, normalize=False)
    assert len(decoded) == 12
    entries = [p for p in cache.iterdir() if p.name.startswith("folder-")]
    assert len(entries) == 1 and (entries[0] / "train.x.npy").is_file()
    old_entry = entries[0].name
    again = load_dataset("folder", root=root, cache_dir=cache, seed=1)  # another split: the same entry
    assert len(decoded) == 12 and again.sizes() == first.sizes()
    # a changed file (content and modification time) is a new version of the data: decoded again, the old one gone
    changed = root / "cat" / "03.png"
    _image(changed, np.full((8, 8, 3), 255, np.uint8))
    os.utime(changed, ns=(1, 1))
    later = load_dataset("folder", root=root, cache_dir=cache, normalize=False)
    assert len(decoded) == 24
    entries = [p for p in cache.iterdir() if p.name.startswith("folder-")]
    assert len(entries) == 1 and entries[0].name != old_entry
    x, _ = _all_inputs(later)
    assert sum((a == 255).all() for a in x) == 1
    # an added file too
    _image(root / "dog" / "new.png", _pattern(99))
    assert sum(load_dataset("folder", root=root, cache_dir=cache).sizes().values()) == 13 and len(decoded) == 37
