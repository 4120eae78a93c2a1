"""NAS-Bench-201 cell space: the benchmark's parameter counts, the same function as a hand-written copy of
the benchmark's TinyNetwork, architecture strings (every one of the table's 15,625), random assignments,
zero cells, choice marks and errors."""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import nas
from nas.cli import main
from search_spaces.nb201 import (
    EDGE_VARS,
    EDGES,
    OPS,
    nb201_assignment_from_string,
    nb201_space,
    nb201_string,
)

SPACE = nb201_space()
TABLE = Path(__file__).resolve().parents[1].parent / "shared/data/nb201/nb201.csv"
CIFAR = {"num_classes": 10, "input_shape": (3, 32, 32)}


def table_rows() -> list[dict]:
    if not TABLE.is_file():
        pytest.skip(f"the NAS-Bench-201 table is not at {TABLE}")
    with TABLE.open(newline="") as f:
        return list(csv.DictReader(f))


def every(op: str) -> dict:
    return {v: op for v in EDGE_VARS}


# -- counts ------------------------------------------------------------------------------------------------


def test_benchmark_parameter_counts_at_cifar_size(capsys):
    assert nas.count_params(SPACE.graph(every("nor_conv_3x3"), **CIFAR)) == 1_531_546
    for op in ("none", "skip_connect", "avg_pool_3x3"):  # no convolution in the cells
        assert nas.count_params(SPACE.graph(every(op), **CIFAR)) == 73_306
    mixed = nb201_assignment_from_string("|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|none~2|")
    assert nas.count_params(SPACE.graph(mixed, **CIFAR)) == 73_306
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert main(["describe", "nb201", "--arch", arch, "--input-shape", "3,32,32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 1_531_546 and out["output_shape"] == [10]


def test_parameter_counts_match_the_table():
    rows = random.Random(0).sample(table_rows(), 30)
    for r in rows:
        g = SPACE.graph(nb201_assignment_from_string(r["arch_str"]), **CIFAR)
        assert nas.count_params(g) == round(float(r["c10valid_params_MB"]) * 1e6), r["arch_str"]


# -- the same function as the benchmark's own network ----------------------------------------------------


def ref_op(op: str, c: int) -> nn.Module:
    if op == "none":
        return ZeroRef()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    k = 1 if op == "nor_conv_1x1" else 3
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c))


class ZeroRef(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class InferCellRef(nn.Module):
    """NAS-Bench-201's InferCell: layers in genotype order, node i = sum of its edges."""

    def __init__(self, genotype: list[list[tuple[str, int]]], c: int):
        super().__init__()
        self.layers, self.node_ix, self.node_in = nn.ModuleList(), [], []
        for node in genotype:
            self.node_ix.append([len(self.layers) + k for k in range(len(node))])
            self.node_in.append([j for _, j in node])
            self.layers.extend(ref_op(op, c) for op, _ in node)

    def forward(self, x):
        nodes = [x]
        for ix, inn in zip(self.node_ix, self.node_in, strict=True):
            nodes.append(sum(self.layers[a](nodes[b]) for a, b in zip(ix, inn, strict=True)))
        return nodes[-1]


class ResNetBasicblockRef(nn.Module):
    def __init__(self, c_in: int, c: int):
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetworkRef(nn.Module):
    def __init__(self, arch_str: str, C: int, N: int, num_classes: int):
        super().__init__()
        genotype = [[(e.split("~")[0], int(e.split("~")[1])) for e in part.strip("|").split("|")]
                    for part in arch_str.split("+")]
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        chans = [C] * N + [2 * C] * (N + 1) + [4 * C] * (N + 1)
        reds = [False] * N + [True] + [False] * N + [True] + [False] * N
        self.cells, prev = nn.ModuleList(), C
        for c, r in zip(chans, reds, strict=True):
            self.cells.append(ResNetBasicblockRef(prev, c) if r else InferCellRef(genotype, c))
            prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(prev), nn.ReLU())
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.lastact(x).mean((2, 3)))


def ref_key(key: str) -> str:
    """The graph model's state_dict key as the reference network names it."""
    for pat, rep in ((r"^stem_conv\.", "stem.0."), (r"^stem_bn\.", "stem.1."), (r"^lastact_bn\.", "lastact.0."),
                     (r"^cell(\d+)_down_conv\.", r"cells.\1.downsample.1."),
                     (r"^cell(\d+)_conv_([ab])\.", r"cells.\1.conv_\2.")):
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    m = re.match(r"^cell(\d+)_edge_(\d)_(\d)\.(.*)$", key)
    if m:
        return f"cells.{m[1]}.layers.{EDGES.index((int(m[2]), int(m[3])))}.{m[4]}"
    return key


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
])
def test_same_function_as_the_benchmarks_tiny_network(arch):
    torch.manual_seed(0)
    g = SPACE.graph(nb201_assignment_from_string(arch), num_classes=7, input_shape=(3, 8, 8), C=4, N=2)
    model = nas.build(g)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "running_var", "bias")) or t.dim() == 1:
                t.copy_(torch.rand_like(t.float()) + 0.5 if "var" in name else torch.randn_like(t.float()))
    ref = TinyNetworkRef(arch, C=4, N=2, num_classes=7)
    ref.load_state_dict({ref_key(k): v for k, v in model.state_dict().items()}, strict=True)
    x = torch.randn(3, 3, 8, 8)
    for mode in (False, True):
        model.train(mode)
        ref.train(mode)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


# -- strings -----------------------------------------------------------------------------------------------


def test_string_round_trip_for_every_architecture_of_the_table():
    rows = table_rows()
    assert len(rows) == 15_625
    strings = [r["arch_str"] for r in rows]
    for s in strings:
        a = nb201_assignment_from_string(s)
        assert list(a) == list(EDGE_VARS) and SPACE.validate(a) == a
        assert nb201_string(a) == s
    # the table holds each of the 5^6 cells once
    every_cell = {nb201_string(dict(zip(EDGE_VARS, ops, strict=True))) for ops in itertools.product(OPS, repeat=6)}
    assert set(strings) == every_cell and len(every_cell) == 15_625


def test_string_order_is_the_benchmarks():
    a = nb201_assignment_from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    assert a == {"edge_1_0": "nor_conv_3x3", "edge_2_0": "none", "edge_2_1": "nor_conv_1x1",
                 "edge_3_0": "skip_connect", "edge_3_1": "avg_pool_3x3", "edge_3_2": "none"}
    g = SPACE.graph(a, C=2, N=1)
    assert nas.graph.ordered_inputs(g, "cell0_edge_2_1") == ["cell0_edge_1_0"]  # node 1 is edge 1_0's output
    assert nas.graph.ordered_inputs(g, "cell0_edge_3_2") == ["cell0_node2"]
    assert g.nodes["cell0_edge_3_1"]["op"] == "avgpool" and g.nodes["cell0_edge_2_1"]["params"]["kernel_size"] == 1


@pytest.mark.parametrize("text, match", [
    ("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|", "3 node parts"),
    ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|none~2|", "node 2.*2 edge"),
    ("|nor_conv_3x3~0|+|none~1|none~0|+|skip_connect~0|none~1|none~2|", "op~0"),
    ("|conv~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "unknown op 'conv'"),
    ("nor_conv_3x3~0+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "node 1"),
])
def test_malformed_strings_raise_naming_the_part(text, match):
    with pytest.raises(nas.SpaceError, match=match):
        nb201_assignment_from_string(text)


def test_describe_arch_errors(capsys):
    assert main(["describe", "nb201", "--arch", "|x~0|+|none~0|none~1|+|none~0|none~1|none~2|"]) == 2
    assert "unknown op 'x'" in capsys.readouterr().err
    assert main(["describe", "resnet", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]) == 2
    assert "nb201" in capsys.readouterr().err


# -- architectures -----------------------------------------------------------------------------------------


def test_random_assignments_build_run_and_round_trip():
    rng = random.Random(0)
    for _ in range(6):
        a = SPACE.sample(rng)
        g = SPACE.graph(a, C=4, N=1)  # digits-sized default input 1x8x8
        model = nas.build(g)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        back = nas.from_json(nas.to_json(g))
        assert nas.arch_id(back) == nas.arch_id(g)
        assert nb201_assignment_from_string(nb201_string(a)) == a


def test_different_cells_are_different_architectures():
    rng = random.Random(1)
    cells = {nb201_string(SPACE.sample(rng)) for _ in range(300)}
    ids = {nas.arch_id(SPACE.graph(nb201_assignment_from_string(s), C=1, N=1)) for s in cells}
    assert len(ids) == len(cells)


def test_a_cell_cut_off_from_its_input_builds_and_outputs_zeros():
    a = nb201_assignment_from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|none~1|none~2|")
    model = nas.build(SPACE.graph(a, C=4, N=1))
    seen = {}
    model.get_submodule("cell0_edge_3_2").register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    y = model(torch.randn(2, 1, 8, 8))
    assert torch.isfinite(y).all() and seen["out"].abs().max() == 0


def test_first_cell_marks_each_op_choice_and_the_others_repeat_it():
    g = SPACE.graph(SPACE.defaults(), C=2, N=2)
    marks = {d["choice"]: n for n, d in g.nodes(data=True) if d.get("choice")}
    assert marks == {v: f"cell0_{v}" for v in EDGE_VARS}
    cells = sorted({n.split("_")[0] for n in g.nodes if n.startswith("cell")}, key=lambda c: int(c[4:]))
    assert cells == [f"cell{k}" for k in range(8)]  # 2 + reduction + 2 + reduction + 2
    assert g.nodes["cell2"]["merge"] == "sum" and g.nodes["cell5_conv_a"]["params"]["stride"] == 2
    assert nas.infer_shapes(g)["cell7_node3"] == (8, 2, 2)


def test_presets_and_errors():
    best = max(table_rows(), key=lambda r: float(r["c10_test_200ep_mean"])) if TABLE.is_file() else None
    g = SPACE.graph(preset="best_cifar10")
    assert g.graph["num_classes"] == 10 and list(g.graph["input_shape"]) == [3, 32, 32]
    if best is not None:
        assert nb201_string(g.graph["assignment"]) == best["arch_str"]
    with pytest.raises(nas.SpaceError, match="multiples of 4"):
        SPACE.graph(SPACE.defaults(), input_shape=(3, 30, 30))
    with pytest.raises(nas.SpaceError, match="'N'"):
        SPACE.graph(SPACE.defaults(), N=0)
    with pytest.raises(nas.SpaceError, match="edge_3_2"):
        nb201_string({v: "none" for v in EDGE_VARS[:-1]})
