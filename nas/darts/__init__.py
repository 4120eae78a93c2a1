"""DARTS (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019) on any space.

- `nas.darts.mixed`: the ``mixed`` op (softmax over architecture weights of a node's alternatives);
- `nas.darts.supernet`: a space's supernet, built generically from its op-choice variables;
- `nas.darts.relax`: the hook a cell space with input choices gives (all-edges relaxation, top-k);
- `nas.darts.bilevel`: first- and second-order bilevel optimisation of weights and alphas;
- `nas.darts.derive`: the discrete assignment from the alphas, and the share of parameter-free ops;
- `nas.darts.driver`: ``nas search --strategy darts`` (one Ray trial searching, one retraining).

Only `nas.darts.mixed` is imported with `nas` (it registers the op); the rest on demand.
"""
