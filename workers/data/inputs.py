"""The preparation of inputs on the training device: ``x.float() / divisor`` (`InputTransform.scaled`, what
augmentation works on), then ``(x - mean) / std`` per channel (`InputTransform.standardise`): the very formula of
the exported ``Normalize`` op (`nas.ops`), so an exported model sees exactly the worker's inputs."""

from __future__ import annotations

from typing import Any

import torch


class InputTransform:
    """The worker's standardisation of inputs (a tensor of any dtype) on `device` (see the module docstring)."""

    def __init__(self, preprocessing: dict[str, Any], device: torch.device | str, rank: int):
        mean, std = preprocessing["mean"], preprocessing["std"]
        view = [len(mean)] + [1] * (rank - 1)
        self.divisor = 1.0 / float(preprocessing["scale"])
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(view)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).reshape(view)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) / self.divisor

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.scaled(x))
