"""Search space core: variables, assignments, op-choice marking, and the registry."""

from __future__ import annotations

import random
import textwrap

import pytest

import nas
from nas.graph import ArchGraph, ArchitectureError
from nas.space import SpaceError, as_space


def tiny_space(mark_choice: bool = True) -> nas.SearchSpace:
    def build(a, *, num_classes, input_shape, head_bias=True):
        g = ArchGraph(input_shape)
        x = "input"
        for i in range(a["depth"]):
            x = g.add_op(f"conv{i}", "conv", x, out_channels=a["width"], kernel_size=3)
            x = g.add_op(f"relu{i}", "relu", x)
        k = {"conv3": 3, "conv1": 1}[a["op"]]
        x = g.add_op("choice", "conv", x, choice="op" if mark_choice else None, out_channels=a["width"],
                     kernel_size=k)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes, bias=head_bias)
        return g

    return nas.SearchSpace(
        "tiny",
        [nas.Ordinal("depth", (1, 2, 3)), nas.Ordinal("width", (4, 8), default=8),
         nas.Categorical("op", ("conv3", "conv1"), op_choice=True)],
        build, presets={"big": nas.Preset({"depth": 3}, num_classes=5)}, options={"head_bias": True},
    )


def test_variables_and_domains():
    v = nas.Ordinal("depth", (1, 2, 3))
    assert v.default == 1 and v.neighbours(2) == [1, 3] and v.neighbours(1) == [2]
    c = nas.Categorical("op", ("a", "b", "c"))
    assert c.neighbours("a") == ["b", "c"]
    with pytest.raises(SpaceError, match="'depth'.*not in its domain"):
        v.index(7)
    with pytest.raises(SpaceError, match="twice"):
        nas.Categorical("x", ("a", "a"))
    with pytest.raises(SpaceError, match="empty"):
        nas.Ordinal("x", ())
    with pytest.raises(SpaceError, match="identifier"):
        nas.Ordinal("bad name", (1,))
    with pytest.raises(SpaceError, match="default"):
        nas.Ordinal("x", (1, 2), default=3)
    assert nas.Categorical("flag", (True, False)).parse("false") is False
    assert nas.Ordinal("w", (16, 32)).parse("32") == 32


def test_bool_and_int_are_not_confused():
    v = nas.Ordinal("w", (0, 1, 2))
    assert not v.contains(True)
    assert nas.Categorical("b", (True, False)).contains(True)


def test_assignments_are_checked_by_name():
    s = tiny_space()
    assert s.size() == 12
    with pytest.raises(SpaceError, match="lacks variable"):
        s.graph({"depth": 2})
    with pytest.raises(SpaceError, match="'width'.*not in its domain"):
        s.graph({"depth": 2, "width": 5, "op": "conv1"})
    with pytest.raises(SpaceError, match="no variable 'colour'"):
        s.graph({"colour": 1}, partial=True)
    with pytest.raises(SpaceError, match="no option"):
        s.graph(partial=True, dropout=0.1)
    g = s.graph({"depth": 2}, partial=True)
    assert g.graph["assignment"] == {"depth": 2, "width": 8, "op": "conv3"}


def test_presets_and_options():
    s = tiny_space()
    g = s.graph(preset="big")
    assert g.graph["num_classes"] == 5 and g.graph["preset"] == "big"
    assert nas.infer_shapes(g)["fc"] == (5,)
    assert nas.count_params(s.graph(preset="big", head_bias=False)) == nas.count_params(g) - 5
    with pytest.raises(SpaceError, match="no preset 'huge'"):
        s.graph(preset="huge")
    with pytest.raises(SpaceError, match="preset 'bad'"):
        nas.SearchSpace("x", [nas.Ordinal("d", (1, 2))], lambda a, **k: None, presets={"bad": nas.Preset({"d": 3})})


def test_op_choice_must_mark_exactly_one_node():
    with pytest.raises(ArchitectureError, match="op-choice variable 'op'"):
        tiny_space(mark_choice=False).graph(partial=True)


def test_random_assignments_build():
    s = tiny_space()
    for i in range(10):
        a = s.sample(random.Random(i))
        assert s.validate(a) == a
        nas.infer_shapes(s.graph(a))


def test_as_space_from_plain_variables():
    s = as_space([nas.Categorical("a", ("x", "y")), nas.Ordinal("b", (1, 2, 3))])
    assert s.size() == 6
    with pytest.raises(SpaceError, match="expected nas.Categorical"):
        as_space([("a", [1, 2])])


def test_registry_register_and_reference(tmp_path):
    nas.register_space("tiny_test", tiny_space)
    assert "tiny_test" in nas.list_spaces()
    assert nas.get_space("tiny_test").name == "tiny"
    plugin = tmp_path / "my_space.py"
    plugin.write_text(textwrap.dedent("""
        import nas
        from nas.graph import ArchGraph

        def build(a, *, num_classes, input_shape):
            g = ArchGraph(input_shape)
            x = g.add_op("flat", "flatten", "input")
            g.add_op("fc", "linear", x, out_features=num_classes)
            return g

        space = nas.SearchSpace("mine", [nas.Ordinal("unused", (1, 2))], build)
        broken = 42
        def raises():
            raise RuntimeError("boom")
    """))
    assert nas.get_space(f"{plugin}:space").name == "mine"
    with pytest.raises(SpaceError, match="my_space.py:broken.*expected a nas.SearchSpace"):
        nas.get_space(f"{plugin}:broken")
    with pytest.raises(SpaceError, match="raises.*RuntimeError: boom"):
        nas.get_space(f"{plugin}:raises")
    with pytest.raises(SpaceError, match="has no attribute 'nothing'"):
        nas.get_space(f"{plugin}:nothing")
    with pytest.raises(SpaceError, match="does not exist"):
        nas.get_space(f"{tmp_path}/missing.py:space")
    with pytest.raises(SpaceError, match="unknown search space 'nope'"):
        nas.get_space("nope")
