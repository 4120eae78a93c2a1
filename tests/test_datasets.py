"""Data sets: seeded disjoint splits, CIFAR-10 binary decoding, npy folders and their errors, and
`dataset_info` (shape and classes without loading) against `load_dataset`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.data import DatasetError, DatasetInfo, dataset_info, load_dataset
from workers.data.cifar10 import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, read_cifar10_file


def _rows(*xs: torch.Tensor) -> np.ndarray:
    """All examples as sorted rows (a multiset of examples)."""
    a = torch.cat([x.reshape(len(x), -1) for x in xs]).numpy()
    return a[np.lexsort(a.T[::-1])]


def test_digits_shapes_and_sizes():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.name == "digits"
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.x_train.shape[1:] == d.x_val.shape[1:] == d.x_test.shape[1:] == (1, 8, 8)
    assert sum(d.sizes().values()) == 1797
    assert d.sizes()["test"] == round(0.2 * 1797)
    # standardised with the training split's statistics
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3


def test_digits_splits_partition_the_data_and_are_stratified():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", normalize=False)
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1
    everything = torch.from_numpy(load_digits().images[:, None].astype(np.float32) / 16)
    np.testing.assert_array_equal(_rows(d.x_train, d.x_val, d.x_test), _rows(everything))
    labels = torch.cat([d.y_train, d.y_val, d.y_test])
    np.testing.assert_array_equal(np.sort(labels.numpy()), np.sort(load_digits().target))
    overall = np.bincount(labels.numpy()) / len(labels)
    for y in (d.y_val, d.y_test):
        expected = overall * len(y)
        assert np.abs(np.bincount(y.numpy(), minlength=10) - expected).max() <= 1.5


def test_digits_split_is_fixed_by_the_seed():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.y_val, c.y_val)


def test_unknown_dataset_and_bad_fraction():
    with pytest.raises(DatasetError, match="unknown data set 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.5)


# ---------------------------------------------------------------------------------------------------
# CIFAR-10 binary format


def _pixel(label: int, c: int, h: int, w: int, k: int) -> int:
    return (37 * c + 5 * h + 3 * w + 11 * k + label) % 256


def _write_cifar_batch(path, labels, start):
    records = []
    for k, label in enumerate(labels, start):
        img = np.fromfunction(lambda c, h, w, k=k, label=label: _pixel(label, c, h, w, k), (3, 32, 32),
                              dtype=np.int64).astype(np.uint8)
        records.append(np.concatenate([[np.uint8(label)], img.reshape(-1)]))
    np.stack(records).astype(np.uint8).tofile(path)


@pytest.fixture
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    k = 0
    for name in CIFAR10_TRAIN_FILES:  # 5 batches x 4 records = 20 training records
        _write_cifar_batch(folder / name, [(k + i) % 10 for i in range(4)], k)
        k += 4
    _write_cifar_batch(folder / CIFAR10_TEST_FILE, [9, 0, 4, 2], 100)
    return tmp_path


def test_cifar10_record_decoding(cifar_root):
    x, y = read_cifar10_file(cifar_root / "cifar-10-batches-bin" / CIFAR10_TEST_FILE)
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8
    assert y.tolist() == [9, 0, 4, 2]
    # byte 1 + c*1024 + h*32 + w of a record is pixel (c, h, w): R, G, B planes, rows first
    raw = np.fromfile(cifar_root / "cifar-10-batches-bin" / CIFAR10_TEST_FILE, dtype=np.uint8)
    raw = raw.reshape(4, 3073)
    assert raw[1, 1 + 2 * 1024 + 5 * 32 + 7] == x[1, 2, 5, 7] == _pixel(0, 2, 5, 7, 101)
    assert x[3, 0, 31, 0] == _pixel(2, 0, 31, 0, 103) and x[3, 0, 0, 31] == _pixel(2, 0, 0, 31, 103)


def test_cifar10_splits(cifar_root):
    d = load_dataset("cifar10", root=cifar_root, normalize=False)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert d.sizes() == {"train": 16, "val": 4, "test": 4}
    # the official test batch is the test split, in file order
    assert d.y_test.tolist() == [9, 0, 4, 2]
    expect = np.fromfunction(lambda c, h, w: _pixel(9, c, h, w, 100), (3, 32, 32), dtype=np.int64) / 255
    np.testing.assert_allclose(d.x_test[0].numpy(), expect, atol=1e-6)
    # validation is carved from the 20 training records: together they are exactly those records
    train_labels = [(k + i) % 10 for k in range(0, 20, 4) for i in range(4)]
    assert sorted(torch.cat([d.y_train, d.y_val]).tolist()) == sorted(train_labels)
    assert len({tuple(r) for r in _rows(d.x_train, d.x_val)}) == 20
    # the folder itself works as root too, and the split follows the seed
    again = load_dataset("cifar10", root=cifar_root / "cifar-10-batches-bin", normalize=False)
    assert torch.equal(again.x_val, d.x_val)
    assert not torch.equal(load_dataset("cifar10", root=cifar_root, seed=1, normalize=False).x_val, d.x_val)


def test_cifar10_missing_and_truncated_files(cifar_root):
    folder = cifar_root / "cifar-10-batches-bin"
    (folder / CIFAR10_TEST_FILE).unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", root=cifar_root)
    message = str(e.value)
    assert str(folder) in message and CIFAR10_TEST_FILE in message and "download=True" in message
    (folder / CIFAR10_TEST_FILE).write_bytes(b"\x01" * 3000)
    with pytest.raises(DatasetError, match="test_batch.bin: size 3000 bytes"):
        load_dataset("cifar10", root=cifar_root)


def test_cifar10_absent_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere/cifar-10-batches-bin lacks data_batch_1.bin \(and 5"):
        load_dataset("cifar10", root=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------
# npy folders


def _save(folder, **arrays):
    folder.mkdir(exist_ok=True)
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
    return folder


def test_npy_carves_missing_splits(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2, 4, 4)).astype(np.float32)
    y = np.arange(100) % 4
    d = load_dataset("npy", root=_save(tmp_path / "d", x_train=x, y_train=y), normalize=False)
    assert d.input_shape == (2, 4, 4) and d.num_classes == 4
    assert d.sizes() == {"train": 64, "val": 16, "test": 20}
    np.testing.assert_array_equal(_rows(d.x_train, d.x_val, d.x_test), _rows(torch.from_numpy(x)))


def test_npy_uses_given_splits_and_other_ranks(tmp_path):
    rng = np.random.default_rng(1)
    xs = {s: rng.normal(size=(n, 6)).astype(np.float64) for s, n in (("train", 30), ("val", 7), ("test", 9))}
    ys = {s: (np.arange(len(x)) % 3).astype(np.int32) for s, x in xs.items()}
    folder = _save(tmp_path / "vec", **{f"x_{s}": x for s, x in xs.items()},
                   **{f"y_{s}": y for s, y in ys.items()})
    d = load_dataset("npy", root=folder, normalize=False)
    assert d.input_shape == (6,) and d.num_classes == 3
    np.testing.assert_allclose(d.x_val.numpy(), xs["val"].astype(np.float32))
    assert d.y_test.tolist() == ys["test"].tolist() and d.y_test.dtype == torch.int64
    video = _save(tmp_path / "video", x_train=np.zeros((12, 3, 2, 4, 4), np.uint8), y_train=np.arange(12) % 2)
    assert load_dataset("npy", root=video).input_shape == (3, 2, 4, 4)


NPY_FAULTS = [
    ({"x_train": np.zeros((10, 4, 4)), "y_train": np.zeros(10, int)}, "x_train.npy", r"shape \(10, 4, 4\)"),
    ({"x_train": np.zeros((10, 4)), "y_train": np.zeros(10)}, "y_train.npy", "integers"),
    ({"x_train": np.zeros((10, 4)), "y_train": np.zeros(9, int)}, "y_train.npy", "9 labels for 10 examples"),
    ({"x_train": np.zeros((10, 4)), "y_train": -np.ones(10, int)}, "y_train.npy", "found -1"),
    ({"x_train": np.zeros((10, 4)), "y_train": np.zeros((10, 1), int)}, "y_train.npy", "shape"),
    ({"x_train": np.zeros((10, 4)), "y_train": np.zeros(10, int), "x_val": np.zeros((3, 4))}, "y_val.npy",
     "missing"),
    ({"x_train": np.zeros((10, 4)), "y_train": np.zeros(10, int), "x_val": np.zeros((3, 5)),
      "y_val": np.zeros(3, int)}, "x_val.npy", "per-example shape"),
    ({"x_train": np.array([[np.nan, 1.0]] * 10), "y_train": np.zeros(10, int)}, "x_train.npy", "NaN"),
    ({"x_train": np.array([[1, "a"]] * 10, dtype=object), "y_train": np.zeros(10, int)}, "x_train.npy",
     "without pickle"),
    ({"y_train": np.zeros(10, int)}, "x_train.npy", "missing"),
    ({"x_train": np.zeros((2, 4)), "y_train": np.zeros(2, int)}, "", "cannot hold out a test split"),
    ({"x_train": np.zeros((3, 4)), "y_train": np.zeros(3, int)}, "", "cannot hold out a validation split"),
]


@pytest.mark.parametrize("arrays, fault, message", NPY_FAULTS)
def test_npy_errors_name_the_file(tmp_path, arrays, fault, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a, allow_pickle=a.dtype == object)
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset("npy", root=folder)
    assert fault in str(e.value)
    if message != "NaN":  # only reading the inputs finds NaN; dataset_info reads headers
        with pytest.raises(DatasetError) as info_error:
            dataset_info("npy", root=folder)
        assert str(info_error.value) == str(e.value)


def test_unreadable_npy_files_are_dataset_errors(tmp_path):
    folder = _save(tmp_path / "d", y_train=np.zeros(10, int))
    (folder / "x_train.npy").write_bytes(b"")
    for f in (load_dataset, dataset_info):
        with pytest.raises(DatasetError, match="x_train.npy: not a readable .npy file"):
            f("npy", root=folder)
    np.save(folder / "x_train.npy", np.zeros((10, 4)))
    (folder / "x_train.npy").write_bytes((folder / "x_train.npy").read_bytes()[:200])  # truncated
    for f in (load_dataset, dataset_info):
        with pytest.raises(DatasetError, match="x_train.npy: not a readable .npy file"):
            f("npy", root=folder)
    np.savez(folder / "archive.npz", x=np.zeros((10, 4)))
    (folder / "archive.npz").replace(folder / "x_train.npy")
    for f in (load_dataset, dataset_info):
        with pytest.raises(DatasetError, match="x_train.npy: is an .npz archive"):
            f("npy", root=folder)


def test_npy_needs_a_root(tmp_path):
    with pytest.raises(DatasetError, match="root="):
        load_dataset("npy")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("npy", root=tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------
# dataset_info: what load_dataset would give, without loading


def _clips_folder(root):
    """Three classes of 4 clips: (T, H, W) and (C, T, H, W) files, uint8 and float dtypes mixed."""
    rng = np.random.default_rng(0)
    for name, shape, dtype in (("walk", (4, 6, 6), np.float32), ("jump", (1, 4, 6, 6), np.uint8),
                               ("run", (4, 6, 6), np.float64)):
        (root / name).mkdir(parents=True)
        for i in range(4):
            np.save(root / name / f"clip{i}.npy", (rng.random(shape) * 200).astype(dtype))
    return root


@pytest.fixture
def roots(tmp_path, cifar_root):
    """A folder of every kind, by a short name."""
    few = tmp_path / "few" / "cifar-10-batches-bin"  # CIFAR-10 format, but labels 0..4 only: 5 classes
    few.mkdir(parents=True)
    for k, name in enumerate((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
        _write_cifar_batch(few / name, [(k + i) % 5 for i in range(3)], 3 * k)
    rng = np.random.default_rng(2)
    return {
        "cifar": cifar_root, "cifar_folder": cifar_root / "cifar-10-batches-bin", "cifar_few": few,
        "npy_carved": _save(tmp_path / "carved", x_train=rng.normal(size=(40, 2, 4, 4)).astype(np.float32),
                            y_train=np.arange(40) % 4),
        # labels 0..2 in training, class 5 in the validation split only: 6 classes
        "npy_given": _save(tmp_path / "given", x_train=rng.normal(size=(30, 6)), y_train=np.arange(30) % 3,
                           x_val=rng.normal(size=(5, 6)), y_val=np.array([0, 1, 2, 5, 5], np.int16),
                           x_test=rng.normal(size=(4, 6)), y_test=np.arange(4) % 3),
        "npy_video": _save(tmp_path / "video", x_train=np.zeros((12, 3, 2, 4, 4), np.uint8),
                           y_train=np.arange(12) % 2, x_test=np.ones((3, 3, 2, 4, 4), np.uint8),
                           y_test=np.array([0, 1, 1])),
        "clips": _clips_folder(tmp_path / "clips"),
    }


@pytest.mark.parametrize("name, root, options", [
    ("digits", None, {}),
    ("Digits", None, {"seed": 3, "val_fraction": 0.3, "test_fraction": 0.1}),
    ("cifar10", "cifar", {}),
    ("cifar10", "cifar_folder", {"seed": 1}),
    ("cifar10", "cifar_few", {}),
    ("npy", "npy_carved", {}),
    ("npy", "npy_given", {"seed": 2}),
    ("npy", "npy_video", {"val_fraction": 0.5}),
    ("moving_digits:per_class=2", None, {}),
    ("moving_digits:per_class=3,digits=4,frames_per_digit=2,side=10,noise=0.1,seed=1", None, {"seed": 4}),
    ("clips", "clips", {}),
])
def test_dataset_info_agrees_with_load_dataset(roots, name, root, options):
    folder = roots[root] if root else None
    data = load_dataset(name, root=folder, **options)
    info = dataset_info(name, root=folder, **options)
    assert info == DatasetInfo(name=data.name, input_shape=data.input_shape, num_classes=data.num_classes,
                               notes=info.notes)
    assert isinstance(info.input_shape, tuple) and all(type(v) is int for v in info.input_shape)


def test_dataset_info_does_not_load_the_inputs(roots, monkeypatch):
    """No cache entry is built (nothing is decoded), and every input array is memory-mapped (its header read),
    not loaded."""
    import workers.data.dataset

    def refuse(*args, **kwargs):
        raise AssertionError("dataset_info decoded a data set")

    monkeypatch.setattr(workers.data.dataset, "cached_entry", refuse)
    loads = []
    real_load = np.load

    def spy(path, *args, mmap_mode=None, **kwargs):
        loads.append((path.name, mmap_mode))
        return real_load(path, *args, mmap_mode=mmap_mode, **kwargs)

    monkeypatch.setattr(np, "load", spy)  # numpy's own: workers.data.arrays calls np.load
    assert dataset_info("digits").input_shape == (1, 8, 8)
    assert dataset_info("cifar10", root=roots["cifar"]).num_classes == 10
    assert dataset_info("moving_digits").input_shape == (1, 20, 16, 16)
    for name, root in (("npy", "npy_given"), ("npy", "npy_video"), ("clips", "clips")):
        dataset_info(name, root=roots[root])
    inputs = [(f, m) for f, m in loads if not f.startswith("y_")]
    assert len(inputs) == 3 + 2 + 12 and all(m == "r" for _, m in inputs), loads
    with pytest.raises(AssertionError, match="decoded"):  # the spy is where load_dataset would decode
        load_dataset("digits", cache_dir=roots["clips"].parent / "fresh-cache")


def test_dataset_info_errors_are_load_datasets(tmp_path, cifar_root):
    folder = cifar_root / "cifar-10-batches-bin"
    (folder / CIFAR10_TEST_FILE).write_bytes(b"\x01" * 3000)
    (folder / CIFAR10_TRAIN_FILES[0]).write_bytes(b"\x0b" + bytes(3072))  # label byte 11
    (folder / CIFAR10_TRAIN_FILES[2]).unlink()
    cases = [
        ("mnist", {}, "unknown data set 'mnist'"),
        (7, {}, "unknown data set 7"),
        ("digits", {"val_fraction": 1.5}, "val_fraction"),
        ("digits", {"test_fraction": 0}, "test_fraction"),
        ("npy", {}, "root="),
        ("npy", {"root": tmp_path / "absent"}, "does not exist"),
        ("cifar10", {"root": tmp_path / "nowhere"}, r"nowhere/cifar-10-batches-bin lacks data_batch_1.bin \(and 5"),
        ("cifar10", {"root": cifar_root}, "lacks data_batch_3.bin. Put"),
    ]
    for name, kwargs, message in cases:
        with pytest.raises(DatasetError, match=message) as e:
            load_dataset(name, **kwargs)
        with pytest.raises(DatasetError) as info_error:
            dataset_info(name, **kwargs)
        assert str(info_error.value) == str(e.value), name
    _write_cifar_batch(folder / CIFAR10_TRAIN_FILES[2], [1, 2], 0)
    for message in ("data_batch_1.bin: label byte 11 is not a CIFAR-10 class", "test_batch.bin: size 3000 bytes"):
        for f in (load_dataset, dataset_info):
            with pytest.raises(DatasetError, match=message):
                f("cifar10", root=cifar_root)
        (folder / CIFAR10_TRAIN_FILES[0]).write_bytes(b"\x01" + bytes(3072))


def test_dataset_info_is_frozen():
    info = dataset_info("digits")
    with pytest.raises(AttributeError):
        info.num_classes = 3  # type: ignore[misc]
