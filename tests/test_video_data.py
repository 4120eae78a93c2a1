"""Video data: the generated moving_digits set (deterministic, order-only classes) and folders of clips (.npy
clips, frame folders)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import nas
from workers.data import DatasetError, dataset_info, load_dataset
from workers.data.moving_digits import MOVING_DIGITS_DEFAULTS, moving_digit_orders, moving_digits
from workers.training import evaluate, train_candidate


def test_moving_digits_is_deterministic_and_balanced():
    x, y = moving_digits(per_class=3, seed=4)
    assert x.shape == (30, 1, 20, 16, 16) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.bincount(y).tolist() == [3] * 10
    x2, y2 = moving_digits(per_class=3, seed=4)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, moving_digits(per_class=3, seed=5)[0])
    xs, _ = moving_digits(per_class=1, digits=3, frames_per_digit=2, side=10, noise=0.1)
    assert xs.shape == (6, 1, 6, 10, 10)


def test_every_class_shows_every_digit_once_in_a_different_order():
    for d in (3, 5, 10):
        orders = moving_digit_orders(d)
        assert len({tuple(r) for r in orders}) == 2 * d
        assert all(sorted(r) == list(range(d)) for r in orders)
    x, _ = moving_digits(per_class=1, digits=4, frames_per_digit=3)
    segments = x.reshape(8, 1, 4, 3, 16, 16)
    assert (segments == segments[:, :, :, :1]).all()  # one still image per digit


def test_frames_without_their_order_say_nothing_about_the_class():
    """A linear classifier on the time-averaged clip is at chance (10%); the order is what matters."""
    data = load_dataset("moving_digits", seed=0)
    avg = lambda t: t.mean(2).flatten(1).numpy()  # noqa: E731
    clf = LogisticRegression(max_iter=300).fit(avg(data.x_train), data.y_train.numpy())
    acc = (clf.predict(avg(data.x_test)) == data.y_test.numpy()).mean()
    assert acc < 0.2, acc


def test_moving_digits_options_through_the_name():
    data = load_dataset("moving_digits:per_class=6,digits=3,side=12,noise=0.05,seed=2", seed=1)
    assert data.input_shape == (1, 12, 12, 12) and data.num_classes == 6
    assert sum(data.sizes().values()) == 36
    with pytest.raises(DatasetError, match="'frames=3' is not key=value with a key among"):
        load_dataset("moving_digits:frames=3")
    with pytest.raises(DatasetError, match="option 'side' must be an int, got 'big'"):
        load_dataset("moving_digits:side=big")
    with pytest.raises(DatasetError, match="option 'digits' must be an int >= 3, got 2"):
        load_dataset("moving_digits:digits=2")
    with pytest.raises(DatasetError, match="option 'side' must be an int >= 8"):
        load_dataset("moving_digits:side=6")


def _write_clips(root, shapes_per_class):
    rng = np.random.default_rng(0)
    for name, shapes in shapes_per_class.items():
        (root / name).mkdir(parents=True)
        for i, shape in enumerate(shapes):
            np.save(root / name / f"clip{i}.npy", rng.random(shape).astype(np.float32))


def test_clip_folder_loads_with_sorted_class_names(tmp_path):
    _write_clips(tmp_path, {"walk": [(4, 6, 6)] * 5, "jump": [(1, 4, 6, 6)] * 5})
    (tmp_path / "README.txt").write_text("not a class")
    (tmp_path / "walk" / "notes.txt").write_text("not a clip")
    data = load_dataset("clips", root=tmp_path, val_fraction=0.2, test_fraction=0.2, normalize=False)
    assert data.classes == ["jump", "walk"] and data.input_shape == (1, 4, 6, 6) and data.num_classes == 2
    assert sum(data.sizes().values()) == 10
    every = np.concatenate([getattr(data, f"x_{s}").numpy() for s in ("train", "val", "test")])
    labels = np.concatenate([getattr(data, f"y_{s}").numpy() for s in ("train", "val", "test")])
    want = np.load(tmp_path / "walk" / "clip3.npy")[None]
    assert any(np.array_equal(x, want) and y == 1 for x, y in zip(every, labels, strict=True))


def test_clip_folder_errors_name_the_file(tmp_path):
    _write_clips(tmp_path / "a", {"x": [(4, 6, 6)], "y": [(4, 6, 7)]})
    with pytest.raises(DatasetError, match=r"y/clip0.npy: clip shape \(1, 4, 6, 7\) differs from \(1, 4, 6, 6\)"):
        load_dataset("clips", root=tmp_path / "a")
    _write_clips(tmp_path / "b", {"x": [(6, 6)], "y": [(6, 6)]})
    with pytest.raises(DatasetError, match=r"x/clip0.npy: shape \(6, 6\) is not a clip"):
        load_dataset("clips", root=tmp_path / "b")
    _write_clips(tmp_path / "c", {"x": [(4, 6, 6)], "y": [(4, 6, 6)], "empty": []})
    with pytest.raises(DatasetError, match="class folder .*empty holds no clips"):
        load_dataset("clips", root=tmp_path / "c")
    _write_clips(tmp_path / "one", {"x": [(4, 6, 6)] * 3})
    with pytest.raises(DatasetError, match="a single class folder"):
        load_dataset("clips", root=tmp_path / "one")
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        load_dataset("clips", root=tmp_path / "d")
    with pytest.raises(DatasetError, match="'clips' needs root="):
        load_dataset("clips")


def test_frame_folders_are_clips_resampled_to_the_common_length(tmp_path):
    """Folders of PNG frames are clips: decoded to the most common frame size and count; a longer clip is
    resampled in time (its first and last frames kept); .npy clips of that shape may sit beside them."""
    from PIL import Image

    def frames(folder, values, size=(6, 4)):
        folder.mkdir(parents=True)
        for i, v in enumerate(values):
            Image.fromarray(np.full((size[1], size[0]), v, np.uint8)).save(folder / f"f{i:02d}.png")

    for c, name in enumerate(("a", "b")):
        for k in range(3):
            frames(tmp_path / name / f"clip{k}", [10 * c + k + t for t in range(4)])
    frames(tmp_path / "a" / "long", [200 + t for t in range(7)])
    np.save(tmp_path / "b" / "array.npy", np.full((1, 4, 4, 6), 7, np.uint8))
    info = dataset_info("clips", root=tmp_path)
    assert info.input_shape == (1, 4, 4, 6) and any("resampled in time to 4" in n for n in info.notes)
    data = load_dataset("clips", root=tmp_path, normalize=False, val_fraction=0.25, test_fraction=0.25)
    assert data.preprocessing["scale"] == 1 / 255 and data.input_shape == info.input_shape
    x = np.concatenate([data.splits[s].gather()["x"] for s in ("train", "val", "test")])
    assert x.dtype == np.uint8 and len(x) == 8
    long = [c for c in x if c.max() >= 200]
    assert len(long) == 1 and long[0][0, :, 0, 0].tolist() == [200, 202, 204, 206]


def test_video_dataset_info_errors_are_load_datasets(tmp_path):
    """dataset_info raises load_dataset's very errors for bad options and clip folders (from headers)."""
    _write_clips(tmp_path / "shape", {"x": [(4, 6, 6)], "y": [(4, 6, 7)]})
    _write_clips(tmp_path / "rank", {"x": [(6, 6)], "y": [(6, 6)]})
    _write_clips(tmp_path / "empty", {"x": [(4, 6, 6)], "empty": []})
    _write_clips(tmp_path / "single", {"x": [(4, 6, 6)]})
    (tmp_path / "none").mkdir()
    for c in ("x", "y"):
        (tmp_path / "text" / c).mkdir(parents=True)
        np.save(tmp_path / "text" / c / "clip.npy", np.array([["a"] * 4] * 3))
    cases = [("moving_digits:frames=3", None), ("moving_digits:side=big", None), ("moving_digits:digits=2", None),
             ("moving_digits:digits=11", None), ("moving_digits:noise=-1", None), ("moving_digits:per_class=0", None),
             ("clips", None), ("clips:side=3", tmp_path), ("clips", tmp_path / "absent")]
    cases += [("clips", tmp_path / name) for name in ("shape", "rank", "empty", "single", "none", "text")]
    for name, root in cases:
        with pytest.raises(DatasetError) as e:
            load_dataset(name, root=root)
        with pytest.raises(DatasetError) as info_error:
            dataset_info(name, root=root)
        assert str(info_error.value) == str(e.value), name
    # NaN pixels: only reading the clips finds them, which dataset_info does not do
    for c in ("x", "y"):
        (tmp_path / "nan" / c).mkdir(parents=True)
        for i in range(5):
            np.save(tmp_path / "nan" / c / f"{i}.npy", np.full((2, 3, 3), np.nan if i == 4 and c == "y" else 0.5))
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset("clips", root=tmp_path / "nan")
    assert dataset_info("clips", root=tmp_path / "nan").input_shape == (1, 2, 3, 3)


def test_moving_digits_defaults_are_the_documented_ones():
    """moving_digits_info (dataset_info) and moving_digits state the defaults separately; they agree."""
    import inspect

    from workers.data.moving_digits import moving_digits_info

    for f in (moving_digits, moving_digits_info):
        defaults = {k: p.default for k, p in inspect.signature(f).parameters.items()}
        assert defaults == MOVING_DIGITS_DEFAULTS, f.__name__


def test_training_runs_on_clips():
    """workers.training trains a video network on 5D inputs (the moving_digits baseline, one epoch)."""
    torch.manual_seed(0)
    data = load_dataset("moving_digits:per_class=8,side=8", seed=0)
    space = nas.get_space("timeception")
    g = space.graph(preset="digits_tc", input_shape=data.input_shape, hidden=0)
    model = nas.build(g)
    metrics = train_candidate(model, data, epochs=1, batch_size=16, seed=0)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["train_loss"])
    assert evaluate(model, data.x_test, data.y_test)["accuracy"] >= 0.0
