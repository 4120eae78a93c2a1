"""What mixing costs: a DARTS supernet's training step against the same candidate ops as separate modules.

Both networks come from one supernet graph of the ``darts`` space (every (node, input) edge of every cell
mixed over the 8 DARTS ops). The baseline replaces each mixed node by its candidates as separate graph
nodes whose outputs a plain sum merge adds: the same modules, the same inputs, run one after another by
the builder, with no architecture weights. Its zero ('none') candidates are left out, since the mixed op
skips them too (they add nothing); this makes the baseline cheaper, not dearer.

Measured, in one process, interleaved (A, B, A, B, ...) on the same batch:

- step time: forward + backward + SGD step (the supernet's backward also gives the alphas' gradient),
  median over repetitions; and a full first-order DARTS iteration (alpha step + weight step) against
  two baseline steps;
- activation memory: bytes of the distinct storages autograd saves for the backward during one forward
  (``torch.autograd.graph.saved_tensors_hooks``), which is what grows a step's peak memory; the weights,
  gradients and optimizer state are the same in both and not counted;
- peak resident memory of one step in a fresh subprocess per network (ru_maxrss minus the resident size
  just before the step): coarse (the allocator caches), a check on the exact figure above.

CPU only here (no GPU was lent to this task); on a GPU the same script measures CUDA time and
``torch.cuda.max_memory_allocated`` instead of RSS. Usage: ``python benchmarks/darts_overhead.py``
(``--quick`` for a smaller network).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from nas.darts.mixed import ZERO_OPS, build_supernet_module, split_parameters  # noqa: E402
from nas.darts.settings import DartsSettings  # noqa: E402
from nas.darts.supernet import build_supernet  # noqa: E402
from nas.graph import ArchGraph, ordered_inputs, topological_order  # noqa: E402
from workers.darts_bilevel import BilevelSearch  # noqa: E402


def separate_ops_graph(sg) -> ArchGraph:
    """The supernet graph with each mixed node replaced by its non-zero candidates and a sum."""
    g = ArchGraph()
    g.graph.update(sg.graph)
    for n in topological_order(sg):
        d = sg.nodes[n]
        preds = ordered_inputs(sg, n)
        if d["op"] != "mixed":
            g.add_node(n, **{k: v for k, v in d.items()})
            for i, p in enumerate(preds):
                g.add_edge(p, n, order=i)
            continue
        parts = []
        for i, c in enumerate(d["params"]["candidates"]):
            if c["op"] in ZERO_OPS:
                continue
            parts.append(g.add_op(f"{n}_c{i}", c["op"], preds, **c["params"]))
        g.add_op(n, "identity", parts, merge="sum")
    nas.infer_shapes(g)
    return g


def setup(quick: bool):
    opts = {"C": 8, "layers": 5} if quick else {"C": 16, "layers": 5}
    shape, batch = ((3, 16, 16), 16) if quick else ((3, 32, 32), 16)
    net = build_supernet(nas.get_space("darts"), num_classes=10, input_shape=shape, options=opts)
    torch.manual_seed(0)
    supernet = build_supernet_module(net.graph)
    baseline = nas.build(separate_ops_graph(net.graph))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    return net, supernet, baseline, x, y, opts, shape, batch


def step_fn(model):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def saved_bytes(model, x) -> int:
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(storages.values())


def rss_child(which: str, quick: bool) -> None:
    _, supernet, baseline, x, y, *_ = setup(quick)
    model = supernet if which == "supernet" else baseline
    step = step_fn(model)
    step(x, y)  # optimizer state and allocator warm
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize()
    step(x, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"before": before, "peak": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rss-child", choices=["supernet", "baseline"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.rss_child:
        rss_child(args.rss_child, args.quick)
        return
    net, supernet, baseline, x, y, opts, shape, batch = setup(args.quick)
    w_sup, alphas = split_parameters(supernet)
    n_mixed = sum(len(v) for v in net.nodes.values())
    print(f"darts space supernet, options {opts}, input {shape}, batch {batch}, CPU, torch "
          f"{torch.__version__}, 1 thread")
    print("  supernet: mixed ops (zero ops skipped, one ReLU shared by the conv candidates, max-pool outputs")
    print("  re-gathered in the backward); separate ops: each mixed node's 7 non-zero candidates as graph nodes")
    print("  plus a sum merge, i.e. the same modules run one after another with no alphas")
    print(f"  {n_mixed} mixed nodes over {len(net.values)} op choices x 8 ops; weights: supernet "
          f"{sum(p.numel() for p in w_sup):,} (+{sum(a.numel() for a in alphas)} alphas), separate ops "
          f"{sum(p.numel() for p in baseline.parameters()):,}")

    sup_step, base_step = step_fn(supernet), step_fn(baseline)
    settings = DartsSettings(epochs=1, batch_size=batch, seed=0)
    search = BilevelSearch(supernet, x, y, x, y, settings, "cpu")

    def darts_iteration():
        search.alpha_step(x, y, x, y, 0.025)
        search.weight_step(x, y)

    for _ in range(3):
        sup_step(x, y)
        base_step(x, y)
        darts_iteration()
    times = {"supernet": [], "baseline": [], "darts": []}
    for _ in range(args.reps):
        for name, fn in (("supernet", lambda: sup_step(x, y)), ("baseline", lambda: base_step(x, y)),
                         ("darts", darts_iteration)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\nstep time (forward + backward + SGD step), median of", args.reps)
    print(f"  separate ops (sum of candidates, no alphas): {med['baseline'] * 1e3:8.1f} ms")
    print(f"  supernet (mixed ops, alphas' gradient too):  {med['supernet'] * 1e3:8.1f} ms   "
          f"ratio {med['supernet'] / med['baseline']:.3f}")
    print(f"  first-order DARTS iteration (alpha step + weight step) vs two separate-ops steps: "
          f"{med['darts'] * 1e3:.1f} ms, ratio {med['darts'] / (2 * med['baseline']):.3f} (the alpha step's "
          "backward computes no weight gradients)")

    a_sup, a_base = saved_bytes(supernet, x), saved_bytes(baseline, x)
    print("\nactivation memory saved for the backward in one forward (distinct storages)")
    print(f"  separate ops: {a_base / 2**20:8.2f} MiB")
    print(f"  supernet:     {a_sup / 2**20:8.2f} MiB   ratio {a_sup / a_base:.3f}")

    rss = {}
    for which in ("baseline", "supernet"):
        cmd = [sys.executable, __file__, "--rss-child", which] + (["--quick"] if args.quick else [])
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
        rss[which] = max(res["peak"] - res["before"], 0)
    print("\npeak resident memory growth during one step, fresh process each (coarse)")
    print(f"  separate ops: {rss['baseline'] / 2**20:8.1f} MiB")
    print(f"  supernet:     {rss['supernet'] / 2**20:8.1f} MiB   ratio {rss['supernet'] / max(rss['baseline'], 1):.3f}")


if __name__ == "__main__":
    main()
