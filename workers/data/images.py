"""Folders of images, one sub-folder per class, as a data source (read with Pillow).

Layout: ``ROOT/<class>/*.{png,jpg,jpeg,bmp,webp}`` (extensions in any case; other files and hidden entries are
ignored), or ``ROOT/{train,val,test}/<class>/...`` where such split folders are present (``train`` required;
the classes are train's sub-folders in sorted name order, labels 0..K-1; val and test may hold some of them).
Errors, each naming the folder: a class folder without images, a single class, split folders beside class
folders, a val/test class that train lacks, images of different channel counts (1: L, I, F; 3: RGB, RGBA, P,
CMYK, ...).

Every image is decoded once per node into a uint8 cache (`workers.data.cache`): resized, keeping its aspect
ratio, until it covers the image size (antialiased bilinear; JPEGs decoded at a reduced scale where that still
covers it), then centre-cropped to it; an image of that size is stored as it is. The image size is the
``image_size`` setting, else the most common size in the folder (said in the data set's notes). An image that
cannot be read or is truncated is skipped, named and counted in the notes, or with ``strict`` an error naming
it. `scan_folder` reads only the files' headers (what `dataset_info` needs), once per version of the folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.data.arrays import DatasetError, NpyWriter
from workers.data.cache import cached_json, digest

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
BLOCK = 256  # images decoded (in parallel) and written at a time, at most
BLOCK_BYTES = 32 * 2**20  # and at most this many bytes of them
SHOW = 5  # file names quoted in a note


class UnreadableFile(DatasetError):
    """A file cannot be read or decoded (skipped, or an error with strict); the message names it."""


@dataclass(frozen=True)
class ClassLayout:
    """The class folders of a data set root: `classes` in label order, and per part (train, val, test) the
    (label, folder) of each of its class folders."""

    root: Path
    classes: tuple[str, ...]
    parts: dict[str, tuple[tuple[int, Path], ...]]

    def entries(self, listing: Callable[[Path], list[Path]], what: str,
                holds: str) -> dict[str, list[tuple[int, Path]]]:
        """Per part, (label, entry) for every entry `listing` finds in each class folder, in order; a class folder
        where it finds none is an error: ``<what> data set: class folder F holds no <holds>``."""
        out: dict[str, list[tuple[int, Path]]] = {}
        for part, classes in self.parts.items():
            out[part] = []
            for label, folder in classes:
                found = listing(folder)
                if not found:
                    raise DatasetError(f"{what} data set: class folder {folder} holds no {holds}")
                out[part].extend((label, f) for f in found)
        return out

    def file_stat(self, path: Path) -> list[Any]:
        """What identifies a version of a file below the root: its relative path, size and modification time."""
        st = path.stat()
        return [str(path.relative_to(self.root)), st.st_size, st.st_mtime_ns]


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_layout(root: str | os.PathLike | None, what: str, example: str) -> ClassLayout:
    """The layout of ``root/<class>/`` or ``root/{train,val,test}/<class>/`` (see the module docstring); `what`
    names the data set in errors, `example` is what a class folder holds (``*.png``)."""
    if root is None:
        raise DatasetError(f"data set {what!r} needs root=<folder with one sub-folder per class> (--data-root)")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{what} data set: folder {folder} does not exist")
    subdirs = _visible_dirs(folder)
    splits = [d for d in subdirs if d in SPLIT_FOLDERS]
    if splits:
        others = [d for d in subdirs if d not in SPLIT_FOLDERS]
        if "train" not in splits:
            raise DatasetError(f"{what} data set: {folder} has {'/'.join(splits)} but no train folder "
                               f"(expected {folder}/train/<class>/{example})")
        if others:
            raise DatasetError(f"{what} data set: {folder} mixes split folders ({', '.join(splits)}) with other "
                               f"folders ({', '.join(others[:SHOW])}); use {folder}/<class>/{example} or "
                               f"{folder}/{{train,val,test}}/<class>/{example}")
        classes = _visible_dirs(folder / "train")
        parts = {s: folder / s for s in SPLIT_FOLDERS if s in splits}
    else:
        classes, parts = subdirs, {"train": folder}
    base = parts["train"]
    if not classes:
        raise DatasetError(f"{what} data set: {base} has no class sub-folders (expected {base}/<class>/{example})")
    if len(classes) < 2:
        raise DatasetError(f"{what} data set: {base} has a single class folder ({classes[0]}); classification "
                           "needs at least two")
    label = {c: i for i, c in enumerate(classes)}
    out = {}
    for part, path in parts.items():
        names = classes if part == "train" else _visible_dirs(path)
        unknown = [c for c in names if c not in label]
        if unknown:
            raise DatasetError(f"{what} data set: {path} has class folder(s) {unknown[:SHOW]} that "
                               f"{parts['train']} lacks; every class needs training examples")
        if not names:
            raise DatasetError(f"{what} data set: {path} has no class sub-folders")
        out[part] = tuple((label[c], path / c) for c in names)
    return ClassLayout(folder, tuple(classes), out)


def image_files(folder: Path) -> list[Path]:
    """The images directly in `folder`, in name order."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


# ---------------------------------------------------------------------------------------------------
# headers


def image_header(path: Path) -> tuple[int, int, int]:
    """(height, width, channels) from an image file's header, without decoding it; DatasetError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            mode = img.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableFile(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    return h, w, 1 if mode in GRAY_MODES else 3


def read_headers(paths: list[Path], root: Path) -> list[list[Any]]:
    """[height, width, channels, error] of each file (error: a message, the others None), in parallel."""
    def one(path: Path) -> list[Any]:
        try:
            return [*image_header(path), None]
        except UnreadableFile as e:
            return [None, None, None, str(e).replace(str(root) + os.sep, "")]

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        return list(pool.map(one, paths))


def decode_threads() -> int:
    """Threads that decode images: the CPUs this process may use (Pillow decodes without the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class FolderScan:
    """What `scan_folder` found: per part the (label, file) of each image in label then name order, the
    headers, and a fingerprint of the file list (paths, sizes, modification times)."""

    layout: ClassLayout
    files: dict[str, list[tuple[int, Path]]]
    headers: dict[str, list[list[Any]]]  # [height, width, channels, error] per file
    fingerprint: str

    def count(self) -> int:
        return sum(len(f) for f in self.files.values())

    def readable(self) -> Iterator[list[Any]]:
        for part in self.files:
            yield from (h for h in self.headers[part] if h[3] is None)

    def unreadable(self) -> list[str]:
        return [h[3] for part in self.files for h in self.headers[part] if h[3] is not None]


def scan_folder(root: str | os.PathLike | None, cache: Path, what: str = "folder") -> FolderScan:
    """The layout, files and headers of an image folder (see the module docstring); the headers are read once per
    version of the file list and kept in the cache folder."""
    layout = class_layout(root, what, "*.png")
    files = layout.entries(image_files, what, f"images ({', '.join(IMAGE_EXTENSIONS)})")
    stats = [layout.file_stat(f) for part in files for _, f in files[part]]
    fingerprint = digest([str(layout.root.resolve()), stats])
    paths = [f for part in files for _, f in files[part]]
    flat = cached_json(cache / f"headers-{fingerprint}.json", lambda: read_headers(paths, layout.root))
    headers, i = {}, 0
    for part in files:
        headers[part] = flat[i:i + len(files[part])]
        i += len(files[part])
    return FolderScan(layout, files, headers, fingerprint)


def image_shape(scan: FolderScan, image_size: tuple[int, int] | None, what: str) -> tuple[tuple[int, int, int],
                                                                                            list[str]]:
    """((channels, height, width) the images are stored at, notes): the declared size or the most common one;
    mixed channel counts are an error."""
    readable = list(scan.readable())
    if not readable:
        raise DatasetError(f"{what} data set: none of the {scan.count()} images in {scan.layout.root} can be read "
                           f"(e.g. {scan.unreadable()[0]})")
    channels = Counter(h[2] for h in readable)
    if len(channels) > 1:
        examples = {}
        for part in scan.files:
            for (_, f), h in zip(scan.files[part], scan.headers[part], strict=True):
                if h[3] is None:
                    examples.setdefault(h[2], f)
        kinds = ", ".join(f"{n} with {c} channel(s) (e.g. {examples[c]})" for c, n in channels.most_common())
        raise DatasetError(f"{what} data set: {scan.layout.root} mixes images of different channel counts: {kinds}; "
                           "convert them to one mode (all RGB or all greyscale)")
    sizes = Counter((h[0], h[1]) for h in readable)
    notes = []
    if image_size is None:
        (height, width), n = max(sizes.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
        if len(sizes) == 1:
            notes.append(f"image size {height}x{width} (every image's)")
        else:
            notes.append(f"image size {height}x{width}: the most common of {len(sizes)} sizes ({n} of "
                         f"{len(readable)} images); the others are resized and centre-cropped to it "
                         "(set image_size, --image-size, to choose)")
    else:
        height, width = image_size
        same = sizes.get((height, width), 0)
        notes.append(f"image size {height}x{width} (declared); {len(readable) - same} of {len(readable)} images "
                     "are resized and centre-cropped to it")
    return (next(iter(channels)), height, width), notes


# ---------------------------------------------------------------------------------------------------
# decoding


def decode_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """The image in `path` as uint8 (channels, height, width) of `size` (see the module docstring); DatasetError
    naming the file when it cannot be read, is truncated, or has another channel count."""
    from PIL import Image

    height, width = size
    try:
        with Image.open(path) as img:
            if (1 if img.mode in GRAY_MODES else 3) != channels:
                raise DatasetError(f"{path}: has mode {img.mode}, not {channels} channel(s) as the other images")
            mode = "L" if channels == 1 else "RGB"
            if img.size != (width, height):
                img.draft(mode, _covering(img.size, width, height))  # JPEG: decode at a reduced scale
            img = img.convert(mode)  # decodes; a truncated file raises here
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR, box=_centre_box(img.size, width, height))
            a = np.asarray(img, dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableFile(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _covering(size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """The least (w, h) of `size`'s aspect ratio that covers width x height."""
    w, h = size
    scale = max(width / w, height / h)
    return max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))


def _centre_box(size: tuple[int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """The centred box of `size` with the aspect ratio of width x height, as large as fits."""
    w, h = size
    scale = max(width / w, height / h)
    bw, bh = width / scale, height / scale
    left, top = (w - bw) / 2, (h - bh) / 2
    return left, top, left + bw, top + bh


def block_size(example_bytes: int) -> int:
    """Examples per block: `BLOCK`, fewer where they would take more than `BLOCK_BYTES`."""
    return max(1, min(BLOCK, BLOCK_BYTES // max(1, example_bytes)))


def decode_all(paths: Iterable[Path], decode: Callable[[Path], np.ndarray],
               strict: bool, skipped: list[str], root: Path, block: int = BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    """(position, array) of each path that decodes, in order, `block` at a time in parallel; an unreadable one
    (`UnreadableFile`) is added to `skipped` (its path relative to `root` and why), or raised with `strict`; any
    other error is raised."""
    paths = list(paths)

    def one(path: Path) -> np.ndarray | UnreadableFile:
        try:
            return decode(path)
        except UnreadableFile as e:
            return e

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        for start in range(0, len(paths), block):
            for i, result in enumerate(pool.map(one, paths[start:start + block]), start):
                if isinstance(result, UnreadableFile):
                    if strict:
                        raise DatasetError(f"{result} (strict: unreadable images are errors; without strict they "
                                           "are skipped)")
                    skipped.append(str(result).replace(str(root) + os.sep, ""))
                    continue
                yield i, result


def write_images(scan: FolderScan, shape: tuple[int, int, int], dest: Path, strict: bool,
                 what: str = "folder") -> tuple[dict[str, int], list[str]]:
    """Decode every image into ``dest/<part>.{x,y}.npy`` (uint8 (N, C, H, W), int64 labels), a block at a time;
    returns the parts' sizes and the skipped files."""
    channels, height, width = shape
    skipped: list[str] = []
    sizes = {}
    per_block = block_size(channels * height * width)
    for part, files in scan.files.items():
        writer = NpyWriter(dest / f"{part}.x.npy", np.uint8, shape, len(files))
        labels = []
        for i, image in decode_all((f for _, f in files), lambda p: decode_image(p, (height, width), channels),
                                   strict, skipped, scan.layout.root, per_block):
            labels.append(files[i][0])
            writer.write(image[None])
        sizes[part] = writer.close()
        found = set(labels)
        for label, folder in scan.layout.parts[part]:
            if label not in found:
                raise DatasetError(f"{what} data set: class folder {folder} holds no readable image")
        np.save(dest / f"{part}.y.npy", np.asarray(labels, np.int64))
    return sizes, skipped


def skipped_note(skipped: list[str], total: int) -> str:
    """One line for the notes: how many images were skipped, and the first few."""
    more = f" (and {len(skipped) - SHOW} more)" if len(skipped) > SHOW else ""
    return (f"{len(skipped)} of {total} images cannot be read and are skipped: " + "; ".join(skipped[:SHOW]) + more
            + " (strict: make them errors)")
