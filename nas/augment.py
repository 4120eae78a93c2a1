"""Data augmentation: a spec such as ``crop:4,flip,cutout:16`` and the seeded ops that apply it to a batch.

One definition for the search's worker (which augments each training batch on the training device) and
for an exported ``train.py``, which embeds this file's source verbatim (it imports only torch): so both
augment the same way. Evaluation never augments.

The spec is a comma-separated list of ops, applied in the order given; ``none`` (or an empty spec) is
no augmentation. Images are (B, C, H, W), clips (B, C, T, H, W):

- ``crop:P``: a random crop of the input's size from the input zero-padded by P pixels on each side
  (pixel value 0: black), as CIFAR's standard augmentation (``crop:4``);
- ``flip``: a horizontal flip with probability 1/2;
- ``cutout:S``: a square of side S (clipped at the borders) centred at a random pixel, filled with the
  per-channel mean (0 after standardisation, as DeVries & Taylor's cutout applied after normalising);
- ``resized_crop:A``: a random crop of a random area fraction in [A, 1] (default 0.08) and aspect ratio
  in [3/4, 4/3] (log-uniform; a side that would leave the image is clipped), resized back to the input's
  size (bilinear): Inception's and torchvision's random-resized-crop;
- ``jitter:S``: colour jitter: brightness, contrast and saturation each scaled by a random factor in
  [1 - S, 1 + S] (in that order, clamped to the pixel range after each; saturation only for 3 channels);
- ``tcrop:P`` (clips): a random crop of the clip's length from the clip zero-padded by P frames at each
  end; ``tflip`` (clips): the frames in reverse order with probability 1/2.

Random parameters are drawn per example from a CPU ``torch.Generator`` (so a seed gives the same
augmentation on any device) and applied on the batch's device. Ops work on pixel values where the data
set's black is ``low`` and its white ``high`` (per channel; the worker uses [0, 1], the scaled inputs
before standardisation); ``fill`` is the per-channel mean that cutout writes.
"""

import math

import torch
import torch.nn.functional as F

AUGMENT_OPS = {  # name -> (default argument or None for no argument, argument kind, least value, greatest value)
    "crop": (4, int, 0, None),
    "flip": (None, None, None, None),
    "cutout": (16, int, 1, None),
    "resized_crop": (0.08, float, 1e-3, 1.0),
    "jitter": (0.4, float, 0.0, 1.0),
    "tcrop": (2, int, 0, None),
    "tflip": (None, None, None, None),
}
TEMPORAL_OPS = ("tcrop", "tflip")


class AugmentError(ValueError):
    """An augmentation spec is malformed; the message names the part at fault."""


def parse_augment(spec):
    """The ops of `spec` as a list of (name, argument or None), checked; ``none`` or '' is []."""
    if spec is None:
        return []
    if not isinstance(spec, str):
        raise AugmentError(f"augmentation must be a string such as 'crop:4,flip', got {spec!r}")
    ops = []
    for part in (p.strip() for p in spec.split(",")):
        if not part or part == "none":
            if part == "none" and len([p for p in spec.split(",") if p.strip()]) > 1:
                raise AugmentError(f"augmentation {spec!r}: 'none' cannot be combined with other ops")
            continue
        name, sep, text = part.partition(":")
        name = name.strip()
        if name not in AUGMENT_OPS:
            raise AugmentError(f"augmentation {spec!r}: unknown op {name!r}; ops: {', '.join(AUGMENT_OPS)}, none")
        default, kind, least, most = AUGMENT_OPS[name]
        if kind is None:
            if sep:
                raise AugmentError(f"augmentation {spec!r}: {name!r} takes no argument, got {part!r}")
            ops.append((name, None))
            continue
        if not sep:
            ops.append((name, default))
            continue
        try:
            value = kind(text.strip())
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise AugmentError(f"augmentation {spec!r}: the argument of {name!r} must be {what}, got "
                               f"{text.strip()!r}") from None
        if not math.isfinite(value) or value < least or (most is not None and value > most):
            bound = f"in [{least}, {most}]" if most is not None else f">= {least}"
            raise AugmentError(f"augmentation {spec!r}: the argument of {name!r} must be {bound}, got {value}")
        ops.append((name, value))
    return ops


def format_augment(ops):
    """The canonical spec of parsed `ops` ('none' for no op)."""
    return ",".join(n if a is None else f"{n}:{a}" for n, a in ops) or "none"


def check_augment_shape(ops, input_shape):
    """Raise `AugmentError` unless every op applies to examples of `input_shape` (C, H, W) or (C, T, H, W)."""
    rank = len(input_shape)
    for name, _ in ops:
        if rank < 3:
            raise AugmentError(f"augmentation op {name!r} needs images (C, H, W) or clips (C, T, H, W); the data "
                               f"have examples of shape {tuple(input_shape)}")
        if name in TEMPORAL_OPS and rank != 4:
            raise AugmentError(f"augmentation op {name!r} needs clips (C, T, H, W); the data have examples of "
                               f"shape {tuple(input_shape)}")
        if name == "jitter" and input_shape[0] not in (1, 3):
            raise AugmentError(f"augmentation op 'jitter' needs 1 or 3 channels, the data have {input_shape[0]}")


def _bshape(v, nd):
    """A per-example vector shaped to broadcast over a batch of rank `nd`."""
    return v.reshape(-1, *([1] * (nd - 1)))


def _channels(values, x):
    """Per-channel constants as a tensor broadcasting over batch `x` on its device."""
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(1, -1, *([1] * (x.dim() - 2)))


def _shifted_crop(x, pad, offsets, dim, pad_value):
    """Each example's window of x.shape[dim] along `dim`, starting at its offset in x padded by `pad`."""
    nd, size = x.dim(), x.shape[dim]
    d = dim % nd
    widths = [0, 0] * (nd - d)  # F.pad lists the last dimension first
    widths[2 * (nd - 1 - d)] = widths[2 * (nd - 1 - d) + 1] = pad
    if len(set(pad_value)) == 1:  # pads with the black level
        xp = F.pad(x, widths, value=float(pad_value[0]))
    else:
        low = _channels(pad_value, x)
        xp = F.pad(x - low, widths) + low
    shape = [1] * nd
    shape[0], shape[d] = -1, size
    index = (offsets.to(x.device).reshape(-1, 1) + torch.arange(size, device=x.device)).reshape(shape)
    target = list(xp.shape)
    target[d] = size
    return xp.gather(d, index.expand(target))


class Augment:
    """The ops of a spec, applied to training batches; call ``aug(x, generator)``."""

    def __init__(self, spec, low, high, fill):
        self.ops = parse_augment(spec)
        self.low, self.high, self.fill = list(low), list(high), list(fill)

    def __bool__(self):
        return bool(self.ops)

    def __repr__(self):
        return f"Augment({format_augment(self.ops)!r})"

    def __call__(self, x, generator):
        for name, arg in self.ops:
            x = getattr(self, "_" + name)(x, generator, arg)
        return x

    def _flag(self, x, generator):
        return _bshape(torch.rand(x.shape[0], generator=generator) < 0.5, x.dim()).to(x.device)

    def _crop(self, x, generator, pad):
        if pad == 0:
            return x
        n = x.shape[0]
        for dim in (-2, -1):
            x = _shifted_crop(x, pad, torch.randint(0, 2 * pad + 1, (n,), generator=generator), dim, self.low)
        return x

    def _tcrop(self, x, generator, pad):
        if pad == 0:
            return x
        return _shifted_crop(x, pad, torch.randint(0, 2 * pad + 1, (x.shape[0],), generator=generator), -3, self.low)

    def _flip(self, x, generator, _):
        return torch.where(self._flag(x, generator), x.flip(-1), x)

    def _tflip(self, x, generator, _):
        return torch.where(self._flag(x, generator), x.flip(-3), x)

    def _cutout(self, x, generator, side):
        n, (h, w) = x.shape[0], x.shape[-2:]
        cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
        cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
        rows = torch.arange(h, device=x.device).reshape(1, h, 1)
        cols = torch.arange(w, device=x.device).reshape(1, 1, w)
        half = side // 2
        inside = ((rows >= (cy - half).reshape(-1, 1, 1)) & (rows < (cy - half + side).reshape(-1, 1, 1))
                  & (cols >= (cx - half).reshape(-1, 1, 1)) & (cols < (cx - half + side).reshape(-1, 1, 1)))
        inside = inside.reshape(n, *([1] * (x.dim() - 3)), h, w)
        return torch.where(inside, _channels(self.fill, x), x)

    def _resized_crop(self, x, generator, least):
        n, shape = x.shape[0], x.shape
        area = least + (1.0 - least) * torch.rand(n, generator=generator, dtype=torch.float64)
        log_ratio = math.log(3 / 4) + math.log(16 / 9) * torch.rand(n, generator=generator, dtype=torch.float64)
        ratio = torch.exp(log_ratio)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the width and height
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (1 - w) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)  # centre in [-1, 1]
        cy = (1 - h) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
        flat = x.reshape(n, -1, shape[-2], shape[-1])  # a clip's frames as channels: one crop per clip
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(shape)

    def _jitter(self, x, generator, strength):
        n, nd = x.shape[0], x.dim()
        factors = (1 - strength + 2 * strength * torch.rand(3, n, generator=generator)).to(x.device, x.dtype)
        low, high = _channels(self.low, x), _channels(self.high, x)
        x = torch.minimum(torch.maximum(x * _bshape(factors[0], nd), low), high)
        gray = self._gray(x, low, high)
        mean = gray.mean(dim=tuple(range(2, nd)), keepdim=True)  # per channel: each in its own units
        x = torch.minimum(torch.maximum((x - mean) * _bshape(factors[1], nd) + mean, low), high)
        if x.shape[1] == 3:
            gray = self._gray(x, low, high)
            x = torch.minimum(torch.maximum((x - gray) * _bshape(factors[2], nd) + gray, low), high)
        return x

    @staticmethod
    def _gray(x, low, high):
        """Luma (ITU-R 601) of each pixel, computed on values relative to the black level, as one channel."""
        if x.shape[1] != 3:
            return x
        rel = (x - low) / (high - low)
        luma = 0.299 * rel[:, 0:1] + 0.587 * rel[:, 1:2] + 0.114 * rel[:, 2:3]
        return luma * (high - low) + low


def default_augment(dataset, input_shape):
    """The augmentation a practitioner expects for a data set (the ``augment`` setting's default): CIFAR-10's
    crop:4,flip; for an image folder a crop with padding side/8 and a flip below 64 pixels, a random-resized crop
    and a flip from 64 up; none for the others (digits, arrays, clips: nothing is known of them)."""
    base = str(dataset).lower().partition(":")[0]
    if base == "cifar10":
        return "crop:4,flip"
    if base == "folder" and len(input_shape) == 3:
        side = min(input_shape[1:])
        return f"crop:{max(1, round(side / 8))},flip" if side < 64 else "resized_crop:0.08,flip"
    return "none"
