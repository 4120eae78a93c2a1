"""DARTS (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019) on any space.

- `nas.darts.mixed`: the ``mixed`` op (softmax over architecture weights of a node's alternatives);
- `nas.darts.supernet`: a space's supernet, built generically from its op-choice variables;
- `nas.darts.relax`: how a cell space's input choices relax (all-edges relaxation, top-k): the space
  declares a `nas.relaxation.Relaxation` (``SearchSpace.relaxation``), this finds and checks it;
- `nas.darts.derive`: the discrete assignment from the alphas, and the share of parameter-free ops;
- `nas.darts.driver`: ``nas search --strategy darts`` (one Ray trial searching, one retraining).

The bilevel optimisation of weights and alphas (first and second order) is training code run inside the
Ray worker, so it lives with the workers: `workers.darts_bilevel` (run by `workers.darts_trainable`).

Only `nas.darts.mixed` is imported with `nas` (it registers the op); the rest on demand.
"""
