"""Drop-path: in training, a branch that feeds a sum is zeroed per example with probability p (DARTS's
regulariser of cell networks, and stochastic depth on residual networks).

`drop_path_nodes(g)` says which nodes of an architecture are such branches: every input of a node that sums
two or more inputs (``merge="sum"``), where that input is computed by an op other than ``identity`` and
``zero`` (a skip connection is never dropped, as in DARTS) and feeds nothing else. In a residual network with
identity shortcuts that is the residual branch; a projection shortcut (conv + bn) is a branch too.

`DropPath` zeroes those nodes' outputs (forward hooks on their modules, which keep the node id as name:
``model.get_submodule(node)``), each example with probability ``p`` and the kept ones scaled by 1 / (1 - p),
only while the model is in training mode. The worker and an exported ``train.py`` (which embeds this class's
source) set ``p`` per epoch as DARTS does: ``drop_path * epochs_completed / epochs``.
"""

import torch

from nas.graph import aux_nodes, input_nodes, ordered_inputs, topological_order


def drop_path_nodes(g) -> list[str]:
    """The nodes of architecture graph `g` (a networkx DiGraph) whose outputs drop-path may zero, in order."""
    srcs, aux = set(input_nodes(g)), aux_nodes(g)
    out = []
    for n in topological_order(g):
        preds = ordered_inputs(g, n)
        if g.nodes[n].get("merge") != "sum" or len(preds) < 2:
            continue
        for p in preds:
            if (p not in srcs and p not in aux and g.out_degree(p) == 1
                    and g.nodes[p].get("op") not in ("identity", "zero") and p not in out):
                out.append(p)
    return out


class DropPath:
    """Forward hooks that drop the outputs of the named submodules of `model` with probability `p`."""

    def __init__(self, model, names):
        self.p = 0.0
        self.names = list(names)
        self.handles = [model.get_submodule(n).register_forward_hook(self._hook) for n in self.names]

    def _hook(self, module, inputs, output):
        if not module.training or self.p <= 0.0:
            return None
        keep = 1.0 - self.p
        shape = (output.shape[0],) + (1,) * (output.dim() - 1)
        mask = torch.empty(shape, device=output.device, dtype=output.dtype).bernoulli_(keep)
        return output / keep * mask

    def set_epoch(self, epoch, epochs, drop_path):
        """p for an epoch that starts after `epoch` completed ones of `epochs`, rising linearly to `drop_path`."""
        self.p = drop_path * epoch / epochs

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []
