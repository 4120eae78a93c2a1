"""DARTS cell space: the published genotypes' networks (DARTS_V2: 3,349,342 parameters, the figure the
paper's code prints), the wiring of genotype inputs and strides, every op choice marking one node, small
inputs, and errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

import nas
from nas.cli import main
from nas.graph import ordered_inputs
from search_spaces.darts import DARTS_V2, PRIMITIVES, darts_edges_space, darts_space

SPACE = darts_space()


def test_darts_v2_has_the_published_parameter_count(capsys):
    assert main(["describe", "darts", "--preset", "darts_v2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == 3_349_342
    assert summary["input_shape"] == [3, 32, 32] and summary["output_shape"] == [10]


def test_genotype_wiring_inputs_ops_and_strides():
    g = SPACE.graph(preset="darts_v2")
    # 20 cells, reductions at 6 and 13; cell 7 follows a reduction, so its older input is factorized
    assert g.nodes["cell7_pre0"]["op"] == "factorized_reduce" and g.nodes["cell8_pre0"]["op"] == "relu_conv_bn"
    # normal node 5: ('skip_connect', 0), ('dil_conv_3x3', 2)
    assert g.nodes["cell0_n5_s0"]["op"] == "identity" and ordered_inputs(g, "cell0_n5_s0") == ["cell0_pre0"]
    assert g.nodes["cell0_n5_s1"]["op"] == "dil_conv" and ordered_inputs(g, "cell0_n5_s1") == ["cell0_n2"]
    assert ordered_inputs(g, "cell0_n5") == ["cell0_n5_s0", "cell0_n5_s1"]
    # reduce node 3: ('skip_connect', 2) at stride 1, ('max_pool_3x3', 1) at stride 2
    assert g.nodes["cell6_n3_s0"]["op"] == "identity" and ordered_inputs(g, "cell6_n3_s0") == ["cell6_n2"]
    assert g.nodes["cell6_n3_s1"]["params"]["stride"] == 2 and ordered_inputs(g, "cell6_n3_s1") == ["cell6_pre1"]
    assert ordered_inputs(g, "cell6") == [f"cell6_n{i}" for i in (2, 3, 4, 5)]
    shapes = nas.infer_shapes(g)
    assert shapes["stem_bn"] == (108, 32, 32) and shapes["cell5"] == (144, 32, 32)
    assert shapes["cell6"] == (288, 16, 16) and shapes["cell19"] == (576, 8, 8)
    # a stride-2 skip is factorized_reduce: the same genotype with skip on input 0 of a reduction cell
    a = {**DARTS_V2, "reduce_n2_op0": "skip_connect"}
    g2 = SPACE.graph(a, preset="darts_v2")
    assert g2.nodes["cell6_n2_s0"]["op"] == "factorized_reduce"


def test_each_op_choice_marks_one_node_of_the_first_cell_of_its_type():
    g = SPACE.graph(SPACE.defaults(), layers=5)
    marked = {d["choice"]: n for n, d in g.nodes(data=True) if d.get("choice")}
    assert set(marked) == {v.name for v in SPACE.op_choices} and len(SPACE.op_choices) == 16
    assert marked["normal_n3_op1"] == "cell0_n3_s1" and marked["reduce_n3_op1"] == "cell1_n3_s1"
    # the other cells of the type repeat the genotype
    assert g.nodes["cell2_n3_s1"]["op"] == g.nodes["cell0_n3_s1"]["op"]


def test_random_genotypes_build_and_run_at_8x8():
    rng = random.Random(0)
    for _ in range(5):
        a = SPACE.sample(rng)
        g = SPACE.graph(a, C=4, layers=3)
        out = nas.build(g).eval()(torch.randn(2, 1, 8, 8))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_the_all_edges_space_sums_every_earlier_node():
    e = darts_edges_space()
    assert len(e.op_choices) == 2 * (2 + 3 + 4 + 5) and all(v.values == PRIMITIVES for v in e.op_choices)
    g = e.graph(e.defaults(), C=4, layers=3)
    assert ordered_inputs(g, "cell0_n5") == [f"cell0_n5_e{j}" for j in range(5)]
    assert nas.count_params(g) > nas.count_params(SPACE.graph(SPACE.defaults(), C=4, layers=3))


@pytest.mark.parametrize("kw, match", [
    ({"input_shape": (3, 30, 30)}, "multiples of 4"),
    ({"layers": 2}, "'layers' must be an int >= 3"),
    ({"C": 0}, "'C' must be an int >= 1"),
])
def test_bad_options_raise_naming_them(kw, match):
    with pytest.raises(nas.SpaceError, match=match):
        SPACE.graph(SPACE.defaults(), **kw)


def test_the_relaxation_is_declared_on_the_space_lazily_and_survives_copies():
    import dataclasses

    from nas.relaxation import Relaxation
    from search_spaces.darts import darts_relaxation

    assert SPACE.relaxation is darts_relaxation and darts_edges_space().relaxation is None
    r = SPACE.relaxation()
    assert isinstance(r, Relaxation) and r.space.name == "darts_edges" and len(r.nodes) == 2 * len((2, 3, 4, 5))
    r.check(SPACE)
    copy = dataclasses.replace(SPACE, name="darts_copy")
    assert copy.relaxation is darts_relaxation
    assert nas.get_space("darts").relaxation is darts_relaxation


def test_the_space_module_imports_no_strategy():
    """Spaces declare their relaxation as data; they never import nas.darts' strategy code."""
    from conftest import modules_loaded_by

    loaded = modules_loaded_by("search_spaces.darts")
    assert not [m for m in loaded if m.startswith(("nas.darts.", "workers")) and m != "nas.darts.mixed"]
