"""Video data: the generated moving_digits set (deterministic, order-only classes) and folders of .npy clips."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import nas
from workers.datasets import DatasetError, dataset_info, load_dataset
from workers.training import evaluate, train_candidate
from workers.video_data import MOVING_DIGITS_DEFAULTS, moving_digit_orders, moving_digits, read_clip_folder


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
    x, y, names = read_clip_folder(tmp_path)
    assert names == ["jump", "walk"] and x.shape == (10, 1, 4, 6, 6) and y.tolist() == [0] * 5 + [1] * 5
    data = load_dataset("clips", root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (1, 4, 6, 6) and data.num_classes == 2 and sum(data.sizes().values()) == 10


def test_clip_folder_errors_name_the_file(tmp_path):
    _write_clips(tmp_path / "a", {"x": [(4, 6, 6)], "y": [(4, 6, 7)]})
    with pytest.raises(DatasetError, match=r"y/clip0.npy: clip shape \(1, 4, 6, 7\) differs from \(1, 4, 6, 6\)"):
        read_clip_folder(tmp_path / "a")
    _write_clips(tmp_path / "b", {"x": [(6, 6)]})
    with pytest.raises(DatasetError, match=r"x/clip0.npy: shape \(6, 6\) is not a clip"):
        read_clip_folder(tmp_path / "b")
    _write_clips(tmp_path / "c", {"x": [(4, 6, 6)], "empty": []})
    with pytest.raises(DatasetError, match="class folder .*empty holds no .npy clips"):
        read_clip_folder(tmp_path / "c")
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        read_clip_folder(tmp_path / "d")
    with pytest.raises(DatasetError, match="'clips' needs root="):
        load_dataset("clips")


def test_video_dataset_info_errors_are_load_datasets(tmp_path):
    """dataset_info raises load_dataset's very errors for bad options and clip folders (from headers)."""
    _write_clips(tmp_path / "shape", {"x": [(4, 6, 6)], "y": [(4, 6, 7)]})
    _write_clips(tmp_path / "rank", {"x": [(6, 6)]})
    _write_clips(tmp_path / "empty", {"x": [(4, 6, 6)], "empty": []})
    (tmp_path / "none").mkdir()
    (tmp_path / "text" / "x").mkdir(parents=True)
    np.save(tmp_path / "text" / "x" / "clip.npy", np.array([["a"] * 4] * 3))
    cases = [("moving_digits:frames=3", None), ("moving_digits:side=big", None), ("moving_digits:digits=2", None),
             ("moving_digits:digits=11", None), ("moving_digits:noise=-1", None), ("moving_digits:per_class=0", None),
             ("clips", None), ("clips:side=3", tmp_path), ("clips", tmp_path / "absent")]
    cases += [("clips", tmp_path / name) for name in ("shape", "rank", "empty", "none", "text")]
    for name, root in cases:
        with pytest.raises(DatasetError) as e:
            load_dataset(name, root=root)
        with pytest.raises(DatasetError) as info_error:
            dataset_info(name, root=root)
        assert str(info_error.value) == str(e.value), name
    # NaN pixels: only reading the clips finds them, which dataset_info does not do
    (tmp_path / "nan" / "x").mkdir(parents=True)
    for i in range(5):
        np.save(tmp_path / "nan" / "x" / f"{i}.npy", np.full((2, 3, 3), np.nan if i == 4 else 0.5))
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset("clips", root=tmp_path / "nan")
    assert dataset_info("clips", root=tmp_path / "nan").input_shape == (1, 2, 3, 3)


def test_moving_digits_defaults_are_the_documented_ones():
    """moving_digits_info (dataset_info) and moving_digits state the defaults separately; they agree."""
    import inspect

    from workers.video_data import moving_digits_info

    for f in (moving_digits, moving_digits_info):
        defaults = {k: p.default for k, p in inspect.signature(f).parameters.items()}
        assert defaults == MOVING_DIGITS_DEFAULTS, f.__name__


def _workers_imports(path: Path) -> set[str]:
    """The workers.* modules a file imports anywhere, inside functions too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("workers.")}


def test_data_modules_import_in_one_direction():
    """datasets -> video_data -> arrays, no cycle: each of the two used to import the other."""
    folder = Path(__file__).resolve().parents[1] / "workers"
    imports = {m: _workers_imports(folder / f"{m}.py") for m in ("arrays", "video_data", "datasets")}
    assert imports["arrays"] == set()
    assert imports["video_data"] == {"workers.arrays"}
    assert "workers.video_data" in imports["datasets"]


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
