"""Property-based checks over every built-in space: any assignment hypothesis draws builds a valid,
shape-checked graph that round-trips through JSON with its id; any value outside a domain is refused
naming its variable."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from nas.space import SpaceError

SPACES = ["vgg", "inception", "resnet", "densenet", "highway"]


def assignments(space: nas.SearchSpace):
    return st.fixed_dictionaries({v.name: st.sampled_from(v.values) for v in space.variables})


@pytest.mark.parametrize("name", SPACES)
def test_any_assignment_builds_and_round_trips(name):
    space = nas.get_space(name)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(assignments(space))
    def check(a):
        g = space.graph(a)
        shapes = nas.infer_shapes(g)
        assert shapes[nas.graph.output_node(g)] == (space.num_classes,)
        again = nas.from_json(nas.to_json(g))
        assert nas.arch_id(again) == nas.arch_id(g)
        assert again.graph["assignment"] == a

    check()


@pytest.mark.parametrize("name", SPACES)
def test_values_outside_a_domain_name_the_variable(name):
    space = nas.get_space(name)

    @settings(max_examples=25, deadline=None, database=None)
    @given(st.data())
    def check(data):
        a = data.draw(assignments(space))
        var = data.draw(st.sampled_from(space.variables))
        bad = data.draw(st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False), st.none())
                        .filter(lambda v: v is None or not var.contains(v)))
        a[var.name] = bad
        with pytest.raises(SpaceError, match=repr(var.name)):
            space.graph(a)

    check()
