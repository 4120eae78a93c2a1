"""COMBO: combinatorial Bayesian optimisation on the graph Cartesian product of the variables' graphs."""

from nas.strategies.combo.strategy import Combo, ComboWarning

__all__ = ["Combo", "ComboWarning"]
