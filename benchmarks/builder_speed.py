"""Is a network built from an architecture graph as fast as the same network written by hand?

Builds ResNet-50 from the `resnet` space (``nas.build(resnet_space.graph(preset="resnet50"))``) and a
plain torchvision-style ResNet-50 written below (torchvision itself is not installed here), checks they
have the same parameters, copies the hand-written weights into the built one (torchvision names with
'.' -> '_'), checks both compute the same outputs, then times forward + backward in training mode:
warm-up, then repetitions interleaved between the two (alternating which goes first), median.

Three settings: the workload (training step, default batch 8 at 3x224x224); a small training step (batch 2
at 3x32x32); and inference on one 3x32x32 image, the least compute per layer, where per-layer Python
overhead (the builder's own cost: its forward loop over the plan) is the largest share of the time.

    python benchmarks/builder_speed.py | tee results/builder_speed.txt
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from search_spaces.resnet import resnet_space  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# torchvision's ResNet-50 (v1.5), written out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * 4, num_classes)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------------------------


def graph_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """'layer1.0.downsample.0.weight' -> 'layer1_0_downsample_0.weight'."""
    out = {}
    for key, value in state.items():
        path, leaf = key.rsplit(".", 1)
        out[f"{path.replace('.', '_')}.{leaf}"] = value
    return out


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    t = time.perf_counter()
    if model.training:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            model(x)
    return time.perf_counter() - t


def compare(models: dict[str, nn.Module], batch: int, size: int, train: bool, warmup: int,
            reps: int) -> dict[str, float]:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(1))
    names = list(models)
    for m in models.values():
        m.train(train)
        for _ in range(warmup):
            step(m, x, y)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names if r % 2 == 0 else reversed(names):
            times[n].append(step(models[n], x, y))
    return {n: statistics.median(t) for n, t in times.items()} | {f"{n}_all": t for n, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--small-reps", type=int, default=41)
    # one thread: on a shared machine, a second intra-op thread that gets descheduled stalls every op
    # (timings several-fold slower and erratic); the comparison is per-layer cost either way
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    graph = resnet_space.graph(preset="resnet50")
    t = time.perf_counter()
    built = nas.build(graph)
    build_s = time.perf_counter() - t
    hand = ResNet50()
    n_built, n_hand = (sum(p.numel() for p in m.parameters()) for m in (built, hand))
    if n_built != n_hand:
        raise SystemExit(f"parameter counts differ: built {n_built:,} vs hand-written {n_hand:,}")
    built.load_state_dict(graph_keys(hand.state_dict()))  # strict: every name and shape must match
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        diff = (built.eval()(x) - hand.eval()(x)).abs().max().item()

    print("builder speed: ResNet-50 built from the graph vs written by hand (torchvision layout)")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), CPU")
    print(f"parameters: built {n_built:,}, hand-written {n_hand:,} (equal); graph nodes {graph.number_of_nodes()}")
    print(f"weights copied; max |output difference| in eval mode: {diff:.2e}")
    print(f"nas.build(graph) took {build_s:.2f} s (graph -> module, weights initialised)")
    models = {"built": built, "hand": hand}
    for label, batch, size, train, reps in (
            ("workload, training step (forward+backward)", args.batch, args.size, True, args.reps),
            ("small training step (forward+backward)", 2, 32, True, args.small_reps),
            ("inference (eval, no_grad; least compute per layer)", 1, 32, False, 5 * args.small_reps)):
        r = compare(models, batch, size, train, args.warmup, reps)
        print(f"\n{label}: batch {batch} at 3x{size}x{size}, {args.warmup} warm-up, "
              f"{reps} interleaved repetitions, median")
        print(f"  built        {r['built'] * 1e3:9.1f} ms   (min {min(r['built_all']) * 1e3:.1f})")
        print(f"  hand-written {r['hand'] * 1e3:9.1f} ms   (min {min(r['hand_all']) * 1e3:.1f})")
        print(f"  ratio built / hand-written: {r['built'] / r['hand']:.3f} (median), "
              f"{min(r['built_all']) / min(r['hand_all']):.3f} (min)")


if __name__ == "__main__":
    main()
