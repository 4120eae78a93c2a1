"""A data set opened for training: its splits as indices into the node's decoded cache, and how to prepare inputs.

`load_dataset(name, root=..., seed=...)` finds (or, the first time on a node, builds) the cache entry of the data
set (`workers.data.sources`, `workers.data.cache`) and returns a `DatasetSplits`: the train, validation and test
splits as `Split` (the part's arrays on disk, read by row, and sorted example indices; `workers.data.splits`),
and the preprocessing the worker applies on the training device: ``x.float() / (1 / scale)``, then per channel
``(x - mean) / std`` with the training split's statistics (`workers.data.stats`, computed once per split and
kept in the entry). That dict is `DatasetSplits.preprocessing` (`nas.preprocessing`), which the worker saves with
a trained model so that an exported model applies it to raw inputs. Opening an entry that exists costs a few
file reads: nothing is decoded, converted or copied, and no process holds the inputs.

The test split is for the final report only: the search selects on the validation split.

`dataset_info` gives the input shape and number of classes `load_dataset` would give from file headers, sizes
and labels, without decoding (the search driver needs them before Ray starts), with notes for the log (image
size chosen, files that cannot be read).

Sets: ``digits`` (scikit-learn's 8x8 digits, embedded), ``cifar10`` (the binary distribution), ``folder``
(images, one sub-folder per class), ``npy`` (a folder of ``.npy`` arrays); video ``moving_digits[:options]``
(generated clips) and ``clips`` (a folder of ``.npy`` clips or frame folders per class); the generated sets of
`workers.data.generated` (``rts_digits``, ``digit_pairs``, ``digit_segmentation``, ``digit_detection``,
``multilabel_clips``, options in the name), each naming its task.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.train_settings import image_size_of
from workers.data import cifar10
from workers.data.arrays import DatasetError, FileArray
from workers.data.cache import cache_root, cached_entry, cached_json, digest, read_meta
from workers.data.inputs import InputTransform
from workers.data.sources import Request, source_of
from workers.data.splits import Split, check_fractions, split_indices, split_sizes
from workers.data.stats import channel_stats

log_data = logging.getLogger("graphnas.data")


@dataclass(frozen=True)
class DatasetInfo:
    """What a network needs to know of a data set: `input_shape` (one example, without the batch dimension)
    and `num_classes`, as `load_dataset` would give them; `name` as `DatasetSplits.name`; `notes` for the log."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    notes: tuple[str, ...] = ()
    task: str = "classification"  # what workers.tasks trains on it


@dataclass(eq=False)
class DatasetSplits:
    """A data set split three ways (see the module docstring). ``x_train`` etc. are the whole split's inputs
    standardised (float32) and labels (int64) as tensors, made on first use: for small data sets and tests;
    training reads batches (`workers.data.batches`)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    splits: dict[str, Split]
    # what is done to the inputs as the data set gives them (nas.preprocessing): x * scale, then
    # (x - mean[c]) / std[c] per channel; an exported model applies it itself
    preprocessing: dict[str, Any]
    inputs: tuple[str, ...] = ("x",)
    task: str = "classification"
    classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # x_train etc., once made

    def sizes(self) -> dict[str, int]:
        return {s: len(self.splits[s]) for s in ("train", "val", "test")}

    def __repr__(self) -> str:
        return (f"DatasetSplits(name={self.name!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, sizes={self.sizes()})")

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return InputTransform(self.preprocessing, x.device, len(self.input_shape))(x)

    def _tensor(self, split: str, what: str) -> torch.Tensor:
        key = f"{what}_{split}"
        if key not in self._tensors:
            a = self.splits[split].gather()
            self._tensors[key] = (self.standardise(torch.from_numpy(a[self.inputs[0]])) if what == "x"
                                  else torch.from_numpy(a["y"].astype(np.int64)))
        return self._tensors[key]

    x_train = property(lambda self: self._tensor("train", "x"))
    y_train = property(lambda self: self._tensor("train", "y"))
    x_val = property(lambda self: self._tensor("val", "x"))
    y_val = property(lambda self: self._tensor("val", "y"))
    x_test = property(lambda self: self._tensor("test", "x"))
    y_test = property(lambda self: self._tensor("test", "y"))


def _request(name: str, root: str | os.PathLike | None, image_size: Any, strict: bool,
             cache_dir: str | os.PathLike | None) -> Request:
    if not isinstance(name, str) or not name:
        raise DatasetError(f"unknown data set {name!r}")
    try:
        size = image_size if isinstance(image_size, tuple) else image_size_of(image_size)
    except ValueError as e:
        raise DatasetError(str(e)) from None
    return Request(name.lower(), Path(root).expanduser() if root is not None else None, size, bool(strict),
                   cache_root(cache_dir))


def dataset_info(name: str, *, root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, image_size: Any = None, strict: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """The input shape and number of classes that ``load_dataset(name, root=root, ...)`` would give, without
    decoding the inputs: the search driver needs them to build networks before Ray starts, and the workers load
    the data themselves.

    It reads file sizes, headers and labels, and raises `load_dataset`'s errors (unknown names, bad fractions,
    missing or malformed files and labels, splits too small to hold out) but for those only decoding finds (NaN
    or infinite inputs, images whose header reads but whose data are truncated). `seed` does not change the
    answer; it is taken so that calls mirror `load_dataset`'s.
    """
    check_fractions(val_fraction, test_fraction)
    req = _request(name, root, image_size, strict, cache_dir)
    info = source_of(req.name).info(req)
    split_sizes(info.sizes["train"], info.sizes.get("val"), info.sizes.get("test"), val_fraction=val_fraction,
                test_fraction=test_fraction)
    return DatasetInfo(req.name, tuple(int(v) for v in info.input_shape), int(info.num_classes), info.notes,
                       info.task)


def load_dataset(name: str, *, root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, normalize: bool = True, download: bool = False, image_size: Any = None,
                 strict: bool = False, cache_dir: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = None) -> DatasetSplits:
    """Data set `name` split by `seed` (see the module docstring), decoded into the cache on first use.

    `root`: the folder of ``cifar10`` (holding ``cifar-10-batches-bin``, or that folder itself), ``folder``,
    ``npy`` and ``clips``. `image_size` (``32``, ``"48x64"`` or (h, w)) for image and frame folders; `strict` makes
    an unreadable image an error instead of a skipped file; `cache_dir` is the cache folder (default
    `workers.data.cache.cache_root`). `normalize=False` records mean 0 and std 1 (inputs only scaled). `download`
    (cifar10 only) fetches the archive when files are missing; it is never attempted unless asked for. `log`
    receives the notes when the cache entry is built now (default: the ``graphnas.data`` logger).
    """
    check_fractions(val_fraction, test_fraction)
    req = _request(name, root, image_size, strict, cache_dir)
    if download and req.base == "cifar10":
        folder = cifar10.cifar10_folder(req.root)
        if cifar10._cifar10_missing(folder):
            cifar10.download_cifar10(folder.parent)
    source = source_of(req.name)
    what, content = source.version(req)
    entry, built = cached_entry(req.cache, req.base, what, content, lambda d: source.build(req, d))
    meta = read_meta(entry)
    if strict and meta.get("skipped"):
        raise DatasetError(f"{meta['skipped'][0]} (strict: unreadable files are errors; without strict they are "
                           "skipped)")
    if built:
        for line in meta.get("notes", []):
            (log or log_data.info)(f"data: {line}")
    parts = {part: {f: _open_array(entry / f"{part}.{f}.npy") for f in meta["fields"]} for part in meta["parts"]}
    train = parts["train"]
    n_train = int(meta["parts"]["train"])
    # hold-outs are stratified by the class label where the data set has one (a source may name another field)
    by = meta.get("stratify", "y")
    labels = np.asarray(train[by]) if by in train else np.zeros(n_train, np.int64)
    idx = split_indices(labels, "val" in parts, "test" in parts, seed, val_fraction, test_fraction)
    base_key = f"{entry}:{seed}:{val_fraction}:{test_fraction}"
    splits = {"train": Split(train, idx["train"], f"{base_key}:train")}
    for s in ("val", "test"):
        own = idx[s] is None
        splits[s] = Split(parts[s] if own else train, np.arange(meta["parts"][s]) if own else idx[s],
                          f"{base_key}:{s}")
    scale = float(meta["scale"])
    x = meta["inputs"][0]
    if normalize:
        mean, std = cached_json(entry / f"stats-{digest([seed, val_fraction, test_fraction])}.json",
                                lambda: channel_stats(train[x], idx["train"], 1.0 / scale, f"{req.name} {x}"))
    else:
        channels = train[x].shape[1]
        mean, std = [0.0] * channels, [1.0] * channels
    shape = tuple(int(v) for v in train[x].shape[1:])
    return DatasetSplits(name=req.name, input_shape=shape, num_classes=int(meta["num_classes"]), splits=splits,
                         preprocessing={"scale": scale, "mean": list(mean), "std": list(std)},
                         inputs=tuple(meta["inputs"]), task=meta.get("task", "classification"),
                         classes=meta.get("classes"), notes=list(meta.get("notes", [])))


def from_arrays(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray, *, name: str = "arrays",
                preprocessing: dict[str, Any] | None = None, num_classes: int | None = None) -> DatasetSplits:
    """A `DatasetSplits` of arrays in memory (inputs of any real dtype, int labels), e.g. for a test or a data set
    made in Python; `preprocessing` (default: scale 1, mean 0, std 1) is applied on the device as for any data."""
    xs = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    key = f"{name}:{uuid.uuid4().hex}"  # fresh arrays: never the same as another's in a per-process cache
    splits = {s: Split({"x": np.asarray(x), "y": np.asarray(y, dtype=np.int64)}, np.arange(len(y)), f"{key}:{s}")
              for s, (x, y) in xs.items()}
    channels = np.asarray(x_train).shape[1]
    pre = preprocessing or {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    classes = num_classes if num_classes is not None else int(max(np.max(y) for _, y in xs.values())) + 1
    return DatasetSplits(name=name, input_shape=tuple(np.asarray(x_train).shape[1:]), num_classes=classes,
                         splits=splits, preprocessing=pre)


def _open_array(path: Path) -> Any:
    """A part's array: labels (one value per example) in memory, anything larger read by row from the file."""
    a = FileArray(path)
    return a.read() if a.ndim == 1 else a
