"""Folders of video clips, one sub-folder per class, as a data source: ``clips``.

Layout as image folders (`workers.data.images.class_layout`: ``ROOT/<class>/`` or ``ROOT/{train,val,test}/
<class>/``). A clip is either a ``.npy`` file, (C, T, H, W) or (T, H, W) (read as one channel), any real dtype,
or a folder of frames (``ROOT/<class>/<clip>/*.png`` and the other image types, in name order). A class folder
without clips is an error; other files are ignored.

Every clip has one shape (C, T, H, W). ``.npy`` clips must all have it. Frame folders are decoded as images
(`workers.data.images.decode_image`) to the ``image_size`` setting, else the most common size of their first
frames, and to T = the most common number of frames; a clip with another number of frames is resampled in time
to T (frames at evenly spaced positions, the first and last kept), which the notes say. Stored as uint8 where
every clip is uint8 (frames are), else float32 with uint8 clips scaled to 0..1. A frame that cannot be read
skips its clip (named in the notes), or with ``strict`` is an error.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.data.arrays import DatasetError, NpyWriter, check_real, load_npy
from workers.data.cache import cached_json, digest
from workers.data.images import (
    ClassLayout,
    UnreadableFile,
    block_size,
    class_layout,
    decode_all,
    decode_image,
    image_files,
    read_headers,
)

CLIPS = "clips"


@dataclass(frozen=True)
class ClipScan:
    """The clips of a folder: per part the (label, path) of each clip in label then name order; each clip's
    [kind, shape or frames' header, frame count, dtype, error] ("npy" or "frames"); a fingerprint of the files."""

    layout: ClassLayout
    clips: dict[str, list[tuple[int, Path]]]
    entries: dict[str, list[list[Any]]]
    fingerprint: str


def _clip_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and ((p.is_file() and p.suffix == ".npy") or (p.is_dir() and image_files(p))))


def scan_clips(root: str | os.PathLike | None, cache: Path) -> ClipScan:
    """The layout, clips and headers of a clip folder; headers read once per version of its files."""
    layout = class_layout(root, CLIPS, "*.npy")
    clips = layout.entries(_clip_entries, CLIPS, "clips (.npy files or folders of frames)")
    stats = [[layout.file_stat(f) for f in (image_files(c) if c.is_dir() else [c])]
             for part in clips for _, c in clips[part]]
    fingerprint = digest([str(layout.root.resolve()), stats])

    def headers() -> list[list[Any]]:
        out = []
        frame_folders = [c for part in clips for _, c in clips[part] if c.is_dir()]
        first = dict(zip(frame_folders, read_headers([image_files(c)[0] for c in frame_folders], layout.root),
                         strict=True))
        for part in clips:
            for _, c in clips[part]:
                if c.is_dir():
                    h, w, ch, err = first[c]
                    out.append(["frames", [ch, h, w], len(image_files(c)), "uint8", err])
                else:
                    out.append(_npy_entry(c))
        return out

    flat = cached_json(cache / f"clips-{fingerprint}.json", headers)
    entries, i = {}, 0
    for part in clips:
        entries[part] = flat[i:i + len(clips[part])]
        i += len(clips[part])
    return ClipScan(layout, clips, entries, fingerprint)


def _npy_entry(path: Path) -> list[Any]:
    clip = load_npy(path, mmap=True)  # an unreadable .npy clip is an error at once, as before
    if clip.ndim == 3:
        clip = clip[None]
    if clip.ndim != 4 or 0 in clip.shape:
        raise DatasetError(f"{path}: shape {clip.shape} is not a clip (C, T, H, W) or (T, H, W)")
    check_real(path, clip, values=False)
    return ["npy", [int(v) for v in clip.shape], int(clip.shape[1]), clip.dtype.name, None]


def clip_shape(scan: ClipScan, image_size: tuple[int, int] | None, strict: bool) -> tuple[tuple[int, ...], str,
                                                                                          list[str]]:
    """((C, T, H, W) every clip is stored at, the stored dtype, notes); the errors of mismatched clips."""
    notes: list[str] = []
    entries = [(c, e) for part in scan.clips for (_, c), e in zip(scan.clips[part], scan.entries[part], strict=True)]
    bad = [e[4] for _, e in entries if e[4] is not None]
    if bad and strict:
        raise DatasetError(f"{bad[0]} (strict: unreadable frames are errors; without strict their clips are skipped)")
    npy = [(c, e) for c, e in entries if e[0] == "npy"]
    frames = [(c, e) for c, e in entries if e[0] == "frames" and e[4] is None]
    if not npy and not frames:
        raise DatasetError(f"clips data set: none of the clips in {scan.layout.root} can be read (e.g. {bad[0]})")
    if frames:
        channels = Counter(e[1][0] for _, e in frames)
        if len(channels) > 1:
            raise DatasetError(f"clips data set: {scan.layout.root} mixes frames of different channel counts "
                               f"({dict(channels)}); convert them to one mode")
        sizes = Counter((e[1][1], e[1][2]) for _, e in frames)
        (h, w) = image_size or max(sizes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        counts = Counter(e[2] for _, e in frames)
        t = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        shape = (next(iter(channels)), t, h, w)
        notes.append(f"frame folders: {h}x{w} pixels ({'declared' if image_size else 'the most common size'}), "
                     f"{t} frames (the most common count)")
        resampled = sum(n for c, n in counts.items() if c != t)
        if resampled:
            notes.append(f"{resampled} of {len(frames)} frame folders have another number of frames and are "
                         f"resampled in time to {t}")
    else:
        shape = tuple(npy[0][1][1])
    for c, e in npy:
        if tuple(e[1]) != tuple(shape):
            raise DatasetError(f"{c}: clip shape {tuple(e[1])} differs from {tuple(shape)} of "
                               f"{npy[0][0] if not frames else 'the frame folders'}; every clip must have one "
                               "(C, T, H, W) shape")
    dtypes = {e[3] for _, e in npy} | ({"uint8"} if frames else set())
    return tuple(int(v) for v in shape), "uint8" if dtypes == {"uint8"} else "float32", notes


def _read_clip(path: Path, shape: tuple[int, ...], dtype: str, strict: bool) -> np.ndarray:
    c, t, h, w = shape
    if path.is_dir():
        files = image_files(path)
        positions = np.linspace(0, len(files) - 1, t).round().astype(int) if len(files) != t else range(t)
        try:
            clip = np.stack([decode_image(files[i], (h, w), c) for i in positions], axis=1)
        except UnreadableFile as e:
            raise UnreadableFile(f"clip {path.name}: {e}") from None
    else:
        clip = load_npy(path)
        clip = clip[None] if clip.ndim == 3 else clip
        check_real(path, clip)
    if dtype == "float32":
        clip = clip.astype(np.float32) / 255.0 if clip.dtype == np.uint8 else clip.astype(np.float32)
    return clip


def write_clips(scan: ClipScan, shape: tuple[int, ...], dtype: str, dest: Path, strict: bool) -> tuple[dict[str, int],
                                                                                                        list[str]]:
    """Read every clip into ``dest/<part>.{x,y}.npy``, a block at a time; returns the parts' sizes and the clips
    skipped."""
    skipped: list[str] = []
    sizes = {}
    for part, clips in scan.clips.items():
        writer = NpyWriter(dest / f"{part}.x.npy", dtype, shape, len(clips))
        labels = []
        per_block = block_size(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        for i, clip in decode_all((c for _, c in clips), lambda p: _read_clip(p, shape, dtype, strict), strict,
                                  skipped, scan.layout.root, per_block):
            writer.write(clip[None])
            labels.append(clips[i][0])
        sizes[part] = writer.close()
        found = set(labels)
        for label, folder in scan.layout.parts[part]:
            if label not in found:
                raise DatasetError(f"clips data set: class folder {folder} holds no readable clip")
        np.save(dest / f"{part}.y.npy", np.asarray(labels, np.int64))
    return sizes, skipped
