"""Batches of a split on the training device, and the preparation of inputs there.

A batch is a dict of tensors, one per field of the data set (``x``, ``y``, or whatever a source stores), gathered
by one index from every field, in the data's own dtypes (uint8 images stay uint8 until they are on the device).
`Batches` reads them in one of two ways (the ``data_placement`` setting):

- ``device``: the split's arrays are copied to the training device once (kept per process for the trials that
  follow, `RESIDENT_KEPT` splits) and a batch is an index into them: no work per step;
- ``stream``: a background thread reads each batch's rows from the node's cache file (`FileArray`: positioned
  reads, nothing mapped), in increasing row order, pinned where the device is CUDA, up to `PREFETCH` batches
  ahead of training, and the training thread copies them to the device asynchronously. A process holds at most
  ``PREFETCH + 2`` batches of data, whatever the size of the data set.

``auto`` is ``device`` where the split takes at most `RESIDENT_CPU_BYTES` (on a CPU) or the least of
`RESIDENT_CUDA_BYTES` and a quarter of the GPU's free memory (on CUDA), ``stream`` otherwise. Both ways give the
same batches: the examples of a batch are in increasing position order.

The inputs are prepared on the device afterwards (`workers.data.inputs.InputTransform`).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from workers.data.splits import Split

RESIDENT_CPU_BYTES = 64 * 2**20
RESIDENT_CUDA_BYTES = 2 * 2**30
PREFETCH = 3
RESIDENT_KEPT = 3  # a data set's train, val and test splits
_RESIDENT: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()


def resolve_placement(nbytes: int, device: torch.device, placement: str) -> str:
    """``device`` or ``stream`` for a split of `nbytes` (see the module docstring)."""
    if placement in ("device", "stream"):
        return placement
    if placement != "auto":
        raise ValueError(f"data_placement must be auto, device or stream, got {placement!r}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if nbytes <= min(RESIDENT_CUDA_BYTES, free // 4) else "stream"
    return "device" if nbytes <= RESIDENT_CPU_BYTES else "stream"


def resident_tensors(split: Split, device: torch.device, fields: list[str]) -> dict[str, torch.Tensor]:
    """The split's arrays as tensors on `device`, kept for the next trials of this process (the last
    `RESIDENT_KEPT` splits asked for)."""
    key = (split.key, str(device), tuple(fields))
    if key in _RESIDENT:
        _RESIDENT.move_to_end(key)
        return _RESIDENT[key]
    while len(_RESIDENT) >= RESIDENT_KEPT:
        _RESIDENT.popitem(last=False)
    tensors = {k: torch.from_numpy(a).to(device) for k, a in split.gather(fields=fields).items()}
    _RESIDENT[key] = tensors
    return tensors


_END = object()


class Batches:
    """The batches of `split` on `device` (see the module docstring)."""

    def __init__(self, split: Split, device: torch.device | str, placement: str = "auto",
                 fields: list[str] | None = None, prefetch: int = PREFETCH):
        self.split, self.device = split, torch.device(device)
        self.fields = list(fields) if fields is not None else list(split.arrays)
        self.placement = resolve_placement(split.nbytes, self.device, placement)
        self.prefetch = prefetch
        self._resident = resident_tensors(split, self.device, self.fields) if self.placement == "device" else None

    def __len__(self) -> int:
        return len(self.split)

    def iterate(self, order: torch.Tensor, batch_size: int, steps: int | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of the examples at positions `order` (a CPU int64 tensor: a permutation for training, an arange
        for evaluation), `batch_size` at a time, the first `steps` (default: all) of them; with `shard` (rank,
        world size) the rank's slice of each (every `world`-th example from the `rank`-th: data-parallel
        training, `workers.distributed`)."""
        n = -(-len(order) // batch_size)
        steps = n if steps is None else min(steps, n)
        rank, world = shard
        chunks = [order[i * batch_size:(i + 1) * batch_size].sort().values[rank::world] for i in range(steps)]
        if self._resident is not None:
            for c in chunks:
                c = c.to(self.device)
                yield {k: t[c] for k, t in self._resident.items()}
            return
        yield from self._stream(chunks)

    def _stream(self, chunks: list[torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        pin = self.device.type == "cuda"

        def put(item: Any) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for c in chunks:
                    if stop.is_set():
                        return
                    arrays = self.split.gather(c.numpy(), self.fields)
                    batch = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
                    put({k: t.pin_memory() for k, t in batch.items()} if pin else batch)
                put(_END)
            except BaseException as e:  # raised again in the training thread
                put(e)

        thread = threading.Thread(target=read, name="graphnas-batches", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield {k: t.to(self.device, non_blocking=True) for k, t in item.items()}
        finally:
            stop.set()
            thread.join()
