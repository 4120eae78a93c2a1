"""The loader table: every kind of data set, what it is made of (from metadata), and how it is decoded once into
the node's cache (`workers.data.cache`) as named arrays.

A `Source` has three functions of a `Request` (the data set's name, root, declared image size, strictness and
the cache folder):

- ``info(request)``: input shape, classes and the sizes of the parts it has (``train``, and ``val`` / ``test``
  where the data set has its own), from headers and labels only, with notes for the log;
- ``version(request)``: (what, content): what the data are (e.g. the folder) and what they were decoded from
  (file paths, sizes, modification times; options), the keys of the cache entry;
- ``build(request, folder)``: write the parts' arrays, ``<part>.<field>.npy``, into an empty folder and return
  their metadata: ``parts`` (sizes), ``fields`` (the arrays of each example, e.g. ``["x", "y"]``), ``inputs``
  (the fields the network takes and the worker standardises), ``scale`` (of the inputs: 1/255 for uint8
  pixels), ``num_classes``, ``classes``, ``task`` (what `workers.tasks` trains: ``classification``), ``notes``
  and ``skipped`` (files left out); optionally ``stratify``, the field that hold-out splits are stratified by
  (default ``y``; none where the field is absent).

Inputs are stored as uint8 where the data are (4x less than float32) and as float32 otherwise. A data set of
other examples (pairs of images, masks, boxes, several labels) is a source with other fields and its task;
`register_source` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.augment import default_augment
from workers.data import cifar10, clips, generated, images, moving_digits, npy_folder
from workers.data.arrays import DatasetError

CLASSIFICATION = {"fields": ["x", "y"], "inputs": ["x"], "task": "classification"}
DIGITS_SHAPE, DIGITS_CLASSES, DIGITS_EXAMPLES = (1, 8, 8), 10, 1797  # scikit-learn's load_digits()
DIGITS_SCALE = 1.0 / 16.0  # digits' pixels are 0..16, stored as uint8


@dataclass(frozen=True)
class Request:
    """Which data set, and how to read it."""

    name: str  # lower case, with options (moving_digits:per_class=6)
    root: Path | None
    image_size: tuple[int, int] | None
    strict: bool
    cache: Path

    @property
    def base(self) -> str:
        return self.name.partition(":")[0]

    def needs_root(self, example: str) -> Path:
        if self.root is None:
            raise DatasetError(f"data set {self.base!r} needs root=<{example}> (--data-root)")
        return self.root


@dataclass(frozen=True)
class SourceInfo:
    input_shape: tuple[int, ...]
    num_classes: int
    sizes: dict[str, int]  # examples of each part the data set has: train, and val / test where it has its own
    notes: tuple[str, ...] = ()
    task: str = "classification"  # what workers.tasks trains on it (known before decoding: the search's objective)


@dataclass(frozen=True)
class Source:
    info: Callable[[Request], SourceInfo]
    version: Callable[[Request], tuple[Any, Any]]
    build: Callable[[Request, Path], dict[str, Any]]


SOURCES: dict[str, Source] = {}


def register_source(name: str, source: Source) -> None:
    """Add a kind of data set (`name`, lower case, no ':'); a name taken is an error."""
    if name in SOURCES:
        raise ValueError(f"data source {name!r} is already registered")
    SOURCES[name] = source


def source_of(name: str) -> Source:
    base = name.partition(":")[0]
    if base not in SOURCES:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[base]


def file_stats(paths: list[Path]) -> list[list[Any]]:
    """[path, size, modification time] of each file: what a cache entry of files is keyed by."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _labels_meta(dest: Path, sizes: dict[str, int]) -> int:
    """The number of classes of the labels written: the largest + 1."""
    return int(max(np.load(dest / f"{p}.y.npy").max(initial=-1) for p in sizes)) + 1


# -- digits: scikit-learn's 8x8 digits, embedded ------------------------------------------------------------------


def _digits_build(req: Request, dest: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    np.save(dest / "train.x.npy", d.images.astype(np.uint8)[:, None])  # pixel values 0..16
    np.save(dest / "train.y.npy", d.target.astype(np.int64))
    return {**CLASSIFICATION, "parts": {"train": len(d.target)}, "scale": DIGITS_SCALE, "num_classes": 10,
            "classes": [str(v) for v in range(10)], "notes": [], "skipped": []}


register_source("digits", Source(
    info=lambda req: SourceInfo(DIGITS_SHAPE, DIGITS_CLASSES, {"train": DIGITS_EXAMPLES}),
    version=lambda req: ("digits", 1),
    build=_digits_build,
))


# -- cifar10: the binary distribution ----------------------------------------------------------------------------


def _cifar10_info(req: Request) -> SourceInfo:
    n_train, n_test, max_label = cifar10.cifar10_counts(req.root)
    return SourceInfo((3, 32, 32), max_label + 1, {"train": n_train, "test": n_test})


def _cifar10_build(req: Request, dest: Path) -> dict[str, Any]:
    sizes = cifar10.write_cifar10(req.root, dest)
    return {**CLASSIFICATION, "parts": sizes, "scale": 1 / 255, "num_classes": _labels_meta(dest, sizes),
            "classes": None, "notes": [], "skipped": []}


register_source("cifar10", Source(
    info=_cifar10_info,
    version=lambda req: (str(cifar10.cifar10_folder(req.root).resolve()),
                         file_stats(cifar10.cifar10_files(req.root))),
    build=_cifar10_build,
))


# -- npy: a folder of arrays -------------------------------------------------------------------------------------


NPY_ROOT = "folder holding x_train.npy and y_train.npy"


def _npy_info(req: Request) -> SourceInfo:
    arrays = npy_folder._read_npy_arrays(req.needs_root(NPY_ROOT), header_only=True)
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    labels = [y for y in (y_train, y_val, y_test) if y is not None]
    sizes = {s: len(x) for s, x in (("train", x_train), ("val", x_val), ("test", x_test)) if x is not None}
    return SourceInfo(tuple(x_train.shape[1:]), max(int(y.max(initial=-1)) for y in labels) + 1, sizes)


def _npy_build(req: Request, dest: Path) -> dict[str, Any]:
    sizes, dtype = npy_folder.write_npy_folder(req.root, dest)
    return {**CLASSIFICATION, "parts": sizes, "scale": 1 / 255 if dtype == "uint8" else 1.0,
            "num_classes": _labels_meta(dest, sizes), "classes": None, "notes": [], "skipped": []}


register_source("npy", Source(
    info=_npy_info,
    version=lambda req: (str(req.needs_root(NPY_ROOT).resolve()), file_stats(npy_folder.npy_files(req.root))),
    build=_npy_build,
))


# -- folder: images, one sub-folder per class --------------------------------------------------------------------


def _folder_scan(req: Request) -> tuple[images.FolderScan, tuple[int, int, int], list[str]]:
    scan = images.scan_folder(req.root, req.cache)
    shape, notes = images.image_shape(scan, req.image_size, "folder")
    bad = scan.unreadable()
    if bad and req.strict:
        raise DatasetError(f"{bad[0]} (strict: unreadable images are errors; without strict they are skipped)")
    parts = ", ".join(f"{p} {len(f)}" for p, f in scan.files.items())
    notes.insert(0, f"folder {scan.layout.root}: {scan.count()} images in {len(scan.layout.classes)} classes "
                    f"({parts})")
    if bad:
        notes.append(images.skipped_note(bad, scan.count()))
    return scan, shape, notes


def _folder_info(req: Request) -> SourceInfo:
    scan, shape, notes = _folder_scan(req)
    return SourceInfo(shape, len(scan.layout.classes), {p: len(f) for p, f in scan.files.items()}, tuple(notes))


def _folder_build(req: Request, dest: Path) -> dict[str, Any]:
    scan, shape, notes = _folder_scan(req)
    sizes, skipped = images.write_images(scan, shape, dest, req.strict)
    notes = [n for n in notes if "cannot be read" not in n]
    if skipped:
        notes.append(images.skipped_note(skipped, scan.count()))
    return {**CLASSIFICATION, "parts": sizes, "scale": 1 / 255, "num_classes": len(scan.layout.classes),
            "classes": list(scan.layout.classes), "notes": notes, "skipped": skipped}


register_source("folder", Source(
    info=_folder_info,
    version=lambda req: (str(req.needs_root("folder with one sub-folder of images per class").resolve()),
                         [images.scan_folder(req.root, req.cache).fingerprint, req.image_size]),
    build=_folder_build,
))


# -- moving_digits: generated clips ------------------------------------------------------------------------------


def _moving_digits_info(req: Request) -> SourceInfo:
    shape, classes, n = moving_digits.moving_digits_info(**moving_digits.parse_name(req.name))
    return SourceInfo(shape, classes, {"train": n})


def _moving_digits_build(req: Request, dest: Path) -> dict[str, Any]:
    options = moving_digits.parse_name(req.name)
    sizes = moving_digits.write_moving_digits(options, dest)
    return {**CLASSIFICATION, "parts": sizes, "scale": 1.0, "num_classes": _labels_meta(dest, sizes),
            "classes": None, "notes": [], "skipped": []}


register_source("moving_digits", Source(
    info=_moving_digits_info,
    version=lambda req: ("moving_digits", {**moving_digits.MOVING_DIGITS_DEFAULTS,
                                           **moving_digits.parse_name(req.name)}),
    build=_moving_digits_build,
))


# -- clips: a folder of clips (.npy or frame folders), one sub-folder per class ---------------------------------


def _clips_root(req: Request) -> Path:
    if ":" in req.name:
        raise DatasetError(f"data set 'clips' takes no options, got {req.name!r}; pass root=<folder>")
    return req.needs_root("folder with one sub-folder of clips per class")


def _clips_info(req: Request) -> SourceInfo:
    scan = clips.scan_clips(_clips_root(req), req.cache)
    shape, _, notes = clips.clip_shape(scan, req.image_size, req.strict)
    return SourceInfo(shape, len(scan.layout.classes), {p: len(c) for p, c in scan.clips.items()}, tuple(notes))


def _clips_build(req: Request, dest: Path) -> dict[str, Any]:
    scan = clips.scan_clips(_clips_root(req), req.cache)
    shape, dtype, notes = clips.clip_shape(scan, req.image_size, req.strict)
    sizes, skipped = clips.write_clips(scan, shape, dtype, dest, req.strict)
    if skipped:
        notes.append(images.skipped_note(skipped, sum(len(c) for c in scan.clips.values())).replace("images",
                                                                                                     "clips"))
    return {**CLASSIFICATION, "parts": sizes, "scale": 1 / 255 if dtype == "uint8" else 1.0,
            "num_classes": len(scan.layout.classes), "classes": list(scan.layout.classes), "notes": notes,
            "skipped": skipped}


register_source("clips", Source(
    info=_clips_info,
    version=lambda req: (str(_clips_root(req).resolve()),
                         [clips.scan_clips(req.root, req.cache).fingerprint, req.image_size]),
    build=_clips_build,
))

# -- generated sets for the tasks of nas.tasks (workers.data.generated) ------------------------------------------

GENERATED_VERSION = 1  # raise when a generator changes: the node caches of the old arrays are then rebuilt


def _generated_info(req: Request) -> SourceInfo:
    base, _ = generated.parse_name(req.name)
    spec = generated.GENERATED[base]
    shapes, n = generated.generated_shapes(req.name)
    return SourceInfo(shapes[spec.inputs[0]], spec.num_classes, {"train": n}, task=spec.task)


def _generated_build(req: Request, dest: Path) -> dict[str, Any]:
    base, _ = generated.parse_name(req.name)
    spec = generated.GENERATED[base]
    arrays = generated.generate(req.name)
    for field, a in arrays.items():
        np.save(dest / f"train.{field}.npy", a)
    n = len(arrays[spec.inputs[0]])
    # hold-outs stratified by the class of a one-label example (rts_digits) or a pair's kind (digit_pairs)
    by = "y" if "y" in arrays and arrays["y"].ndim == 1 else None
    return {"fields": list(arrays), "inputs": list(spec.inputs), "task": spec.task, "stratify": by,
            "parts": {"train": n}, "scale": 1 / 255, "num_classes": spec.num_classes,
            "classes": [str(v) for v in range(10)] if base == "rts_digits" else None, "notes": [], "skipped": []}


for _name, _spec in generated.GENERATED.items():
    if _spec.task in ("tracking",):  # an evaluation's sequences (the contrastive task's), not a training set
        continue
    register_source(_name, Source(
        info=_generated_info,
        version=lambda req: ("generated", [GENERATED_VERSION, *generated.parse_name(req.name)]),
        build=_generated_build,
    ))

__all__ = ["SOURCES", "Request", "Source", "SourceInfo", "default_augment", "register_source", "source_of"]
