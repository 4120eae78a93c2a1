"""Time of one COMBO suggestion step of the authors' reference implementation (QUVA-Lab/COMBO) beside ours,
on the same data, in one run: contamination control (25 binary variables), n observations.

The reference is not part of this repository: export it anywhere outside it and pass its root (the folder
that holds `COMBO/`), e.g.

    git --git-dir=<COMBO clone>/.git archive HEAD | tar -x -C /tmp/combo_ref
    python benchmarks/combo_reference_speed.py --reference /tmp/combo_ref --reference-commit <sha> \\
        | tee results/combo_reference_speed.txt

No file of the reference is changed; this script runs it with the run-time shims printed in its output
(`SHIMS`), imports only its GP, sampler and acquisition modules, and builds its contamination problem's
graphs itself (its objective class calls torch.symeig, removed from torch).

Data: one sequence of uniformly random points with values from benchmarks/combo_problems.py
(Contamination(seed=0)); size n uses the first n. The reference gets the raw values (it minimises them, as
its main loop does); ours gets the standardised negated values (it maximises, as `Combo` does).

Chains: each implementation's chain is burnt in as the reference's code does (99 sweeps on the first 20
points, from each one's initial state), then before each size it continues with `--sweeps-between`
sweeps on that size's n points (untimed), so the chain is in a state reached on the data. Every timed
step starts from a copy of that state.

One suggestion step, timed:
- reference: what `run_suggest` in its main.py does (its printing discarded): posterior_sampling with
  n_sample=10, n_burn=0 (10 slice-sampling sweeps continuing the chain), inference_sampling, and
  next_evaluation (EI averaged over the 10 samples at 20,000 random vertices + 10 neighbours of the
  incumbent, the best 20 each starting a greedy ascent, serial). Parts: sampling, scoring of the initial
  candidates (its optim_inits, timed through a wrapper), and the rest (greedy ascents + choosing).
- ours: as benchmarks/combo_speed.py times it: 10 sweeps of our sampler continuing the chain, then the
  acquisition (log EI averaged over the 10 samples, local search from `n_spray` random points + the best
  5 observations and their neighbours, 20 starts); with our default n_spray = 5000 and with the
  reference's 20,000.
- ours through the strategy: `Combo.ask()` (fit="mcmc" and fit="map") with the same n observations
  (n - 1 told, a first untimed ask that burns in with `--ask-burn` sweeps, its pending point dropped, the
  n-th told, then the timed ask).

Measurements are interleaved (ours, reference, ours, reference, ...) so that load from other work hits
both alike; one torch thread for both. A reference step longer than `--ref-limit` seconds stops its
remaining repeats and larger sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import platform
import random
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combo_problems import Contamination  # noqa: E402

from nas.space import as_space  # noqa: E402
from nas.strategies import make_strategy  # noqa: E402
from nas.strategies.combo.acquisition import local_search, log_ei  # noqa: E402
from nas.strategies.combo.gp import ComboGP, GPData, HyperPosterior, initial_theta  # noqa: E402
from nas.strategies.combo.kernel import GraphSpectrum  # noqa: E402

N_SAMPLES, N_STARTS, N_FIRST = 10, 20, 20
SHIMS = [
    "numpy >= 1.24 has no np.int (its next_evaluation calls .astype(np.int)): np.int = int is set before "
    "importing it (only if numpy lacks it)",
    "psutil is imported by its acquisition_optimization but used only for parallel greedy ascent "
    "(parallel=False here): an empty stand-in module when psutil is not installed",
    "simanneal is imported by its simulated_annealing module, whose use is commented out in "
    "next_evaluation: a stand-in (Annealer = object, anneal.round_figures) when not installed",
    "its Contamination objective class is not used (it calls torch.symeig, removed): n_vertices, "
    "adjacency matrices (path graph on 2 vertices) and Laplacian eigenpairs are built as that class "
    "builds them, with torch.linalg.eigh in place of torch.symeig; values come from our combo_problems",
    "torch.cholesky / torch.triangular_solve deprecation warnings silenced (both still work in this torch)",
    "its progress printing to stdout is captured and discarded",
]


# -- the reference, imported from outside the repository ----------------------------------------------

def load_reference(root: Path) -> types.SimpleNamespace:
    if not (root / "COMBO" / "graphGP" / "sampler" / "sample_posterior.py").is_file():
        sys.exit(f"error: --reference {root}: no COMBO/graphGP/sampler/sample_posterior.py there; pass the root "
                 "of an exported QUVA-Lab/COMBO tree (the folder holding COMBO/), e.g. after "
                 "`git --git-dir=<clone>/.git archive HEAD | tar -x -C /tmp/combo_ref`")
    if not hasattr(np, "int"):
        np.int = int  # shim 1
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.modules["psutil"] = types.ModuleType("psutil")  # shim 2
    try:
        import simanneal  # noqa: F401
    except ImportError:  # shim 3
        sa, an = types.ModuleType("simanneal"), types.ModuleType("simanneal.anneal")
        sa.Annealer, an.round_figures, sa.anneal = object, None, an
        sys.modules["simanneal"], sys.modules["simanneal.anneal"] = sa, an
    warnings.filterwarnings("ignore", message=r"torch\.(cholesky|triangular_solve) is deprecated")  # shim 5
    sys.path.insert(0, str(root))
    import COMBO.acquisition.acquisition_optimization as acq_opt
    from COMBO.acquisition.acquisition_functions import expected_improvement
    from COMBO.acquisition.acquisition_marginalization import inference_sampling
    from COMBO.graphGP.kernels.diffusionkernel import DiffusionKernel
    from COMBO.graphGP.models.gp_regression import GPRegression
    from COMBO.graphGP.sampler.sample_posterior import posterior_sampling

    parts = {"inits": 0.0}
    original_inits = acq_opt.optim_inits

    def timed_inits(*args, **kwargs):  # only measures; calls the reference's own function
        t = time.perf_counter()
        out = original_inits(*args, **kwargs)
        parts["inits"] += time.perf_counter() - t
        return out

    acq_opt.optim_inits = timed_inits
    digest = hashlib.sha256()
    for path in sorted((root / "COMBO").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return types.SimpleNamespace(posterior_sampling=posterior_sampling, inference_sampling=inference_sampling,
                                 next_evaluation=acq_opt.next_evaluation, ei=expected_improvement,
                                 DiffusionKernel=DiffusionKernel, GPRegression=GPRegression, parts=parts,
                                 digest=digest.hexdigest()[:16])


class RefChain:
    """The reference's model and chain state (log_beta, partition), set up as its COMBO() does."""

    def __init__(self, ref, d: int):
        self.ref = ref
        self.n_vertices = np.array([2] * d)
        self.adj, freq, basis = [], [], []
        for _ in range(d):  # as its Contamination.__init__ (shim 4)
            adjmat = torch.diag(torch.ones(1), -1) + torch.diag(torch.ones(1), 1)
            self.adj.append(adjmat)
            lap = torch.diag(torch.sum(adjmat, dim=0)) - adjmat
            eigval, eigvec = torch.linalg.eigh(lap)
            freq.append(eigval)
            basis.append(eigvec)
        kernel = ref.DiffusionKernel(grouped_log_beta=torch.ones(d), fourier_freq_list=freq, fourier_basis_list=basis)
        self.model = ref.GPRegression(kernel=kernel)
        self.log_beta = torch.zeros(d)
        self.partition = [[m] for m in range(d)]

    def sweeps(self, x: torch.Tensor, y: torch.Tensor, n: int, init: bool = False) -> None:
        if init:
            self.model.init_param(y)
        with contextlib.redirect_stdout(io.StringIO()):
            out = self.ref.posterior_sampling(self.model, x, y, self.n_vertices, self.adj, self.log_beta,
                                              self.partition, n_sample=1, n_burn=n - 1, n_thin=1)
        self.log_beta, self.partition = out[1][0], out[2][0]

    def step(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, float, float, torch.Tensor]:
        """One suggestion as its run_suggest, from a copy of the chain; (sampling, inits, rest, suggestion)."""
        model, log_beta, partition = copy.deepcopy(self.model), self.log_beta.clone(), copy.deepcopy(self.partition)
        np.random.seed(seed)
        torch.manual_seed(seed)
        ref = self.ref
        ref.parts["inits"] = 0.0
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            reference = torch.min(y, dim=0)[0].item()
            samples = ref.posterior_sampling(model, x, y, self.n_vertices, self.adj, log_beta, partition,
                                             n_sample=N_SAMPLES, n_burn=0, n_thin=1)
            hyper, log_betas, partitions, freqs, bases, edges = samples
            t1 = time.perf_counter()
            x_opt = x[torch.argmin(y)]
            inference = ref.inference_sampling(x, y, self.n_vertices, hyper, log_betas, partitions, freqs, bases)
            suggestion = ref.next_evaluation(x_opt, x, inference, partitions, edges, self.n_vertices, ref.ei,
                                             reference, False)
            t2 = time.perf_counter()
        inits = ref.parts["inits"]
        return t1 - t0, inits, t2 - t1 - inits, suggestion[0].view(-1)


# -- ours --------------------------------------------------------------------------------------------

def ours_step(spectrum, x, y, chain, seed, n_spray) -> tuple[float, float, torch.Tensor]:
    """As combo_speed.ours_step, with n_spray as an argument; returns (MCMC, acquisition, suggestion)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    post = HyperPosterior(spectrum, GPData(x, y))
    thetas = post.sample(chain, N_SAMPLES, rng)
    t1 = time.perf_counter()
    th = torch.tensor(thetas, dtype=torch.float64)
    model = ComboGP(spectrum, x, y.expand(len(th), -1), th)
    best = x[torch.argsort(y, descending=True)[:N_STARTS // 4]].long()
    points, _ = local_search(log_ei(model, float(y.max())), spectrum, best, n_spray, N_STARTS,
                             torch.Generator().manual_seed(seed))
    return t1 - t0, time.perf_counter() - t1, points[0]


def ours_ask(problem, xs: np.ndarray, vals: np.ndarray, n: int, fit: str, burn: int) -> float:
    """Wall time of Combo.ask() with the first n data points told (see the module docstring)."""
    space = as_space(problem.variables)
    s = make_strategy("combo", space, seed=0, mode="min", fit=fit, n_burn=burn, n_initial=2)
    names = [v.name for v in problem.variables]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n - 1):
            s.tell(dict(zip(names, (int(v) for v in xs[i]), strict=True)), float(vals[i]))
        s.ask()
        s.clear_pending()
        s.tell(dict(zip(names, (int(v) for v in xs[n - 1]), strict=True)), float(vals[n - 1]))
        t = time.perf_counter()
        s.ask()
    return time.perf_counter() - t


def standardised(vals: np.ndarray) -> torch.Tensor:
    scores = -vals
    return torch.tensor((scores - scores.mean()) / scores.std(ddof=1), dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="root of an exported QUVA-Lab/COMBO tree (holding COMBO/), outside this repository")
    parser.add_argument("--reference-commit", default="unknown", help="the exported commit, printed only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 250, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweeps-between", type=int, default=10)
    parser.add_argument("--ask-burn", type=int, default=10)
    parser.add_argument("--ref-limit", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ref = load_reference(args.reference.resolve())
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    problem = Contamination(seed=0)
    d = len(problem.variables)
    spectrum = GraphSpectrum.of_space(as_space(problem.variables))
    rng = np.random.default_rng(args.seed)
    n_max = max(args.sizes + [N_FIRST])
    xs = rng.integers(0, 2, (n_max, d))
    vals = np.array([problem.value(x.astype(float)) for x in xs])

    print("COMBO, one suggestion step: the reference implementation (QUVA-Lab/COMBO) vs ours, same data, "
          "contamination control (25 binary variables)")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"torch threads: {torch.get_num_threads()} (set to 1 for both), {platform.machine()}, 2 cores shared "
          "with other work")
    print(f"reference: commit {args.reference_commit}, sha256 of its COMBO/**/*.py {ref.digest}; no reference "
          "file changed; run-time shims:")
    for i, s in enumerate(SHIMS, 1):
        print(f"  {i}. {s}")
    print(f"chains: 99 burn-in sweeps on the first {N_FIRST} points (as its code), then {args.sweeps_between} "
          f"untimed sweeps on each size's data before its timings; ask(): n_burn={args.ask_burn} on the untimed "
          f"first ask; {args.repeats} repeats, interleaved; table: median of the repeats (min in brackets)\n")

    # burn-in at n = 20 for both (also pays one-off costs: imports, allocator)
    x20, v20 = xs[:N_FIRST], vals[:N_FIRST]
    chain_ref = RefChain(ref, d)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    chain_ref.sweeps(torch.tensor(x20, dtype=torch.long), torch.tensor(v20, dtype=torch.float32).view(-1, 1), 99,
                     init=True)
    t_ref_burn = time.perf_counter() - t
    post = HyperPosterior(spectrum, GPData(torch.tensor(x20, dtype=torch.float64), standardised(v20)))
    t = time.perf_counter()
    chain = post.sample(post.feasible(initial_theta(d)), 99, random.Random(args.seed))[-1]
    t_our_burn = time.perf_counter() - t
    x20_long, y20_ref = torch.tensor(x20, dtype=torch.long), torch.tensor(v20, dtype=torch.float32).view(-1, 1)
    x20_f, y20 = torch.tensor(x20, dtype=torch.float64), standardised(v20)
    w_ref = sum(chain_ref.step(x20_long, y20_ref, seed=0)[:3])  # warm-up: first calls pay one-off costs
    w_ours = sum(ours_step(spectrum, x20_f, y20, chain, 0, 5000)[:2])
    print(f"burn-in, 99 sweeps at n={N_FIRST}: reference {t_ref_burn:.1f}s, ours {t_our_burn:.2f}s; one untimed "
          f"warm-up step at n={N_FIRST}: reference {w_ref:.1f}s, ours {w_ours:.2f}s\n")

    header = (f"{'n':>4s} | {'ref: sample':>11s} {'+ score 20k':>11s} {'+ ascent':>9s} {'= total':>8s} | "
              f"{'ours: MCMC':>10s} {'+ acq':>6s} {'= total':>8s} {'ref/ours':>8s} | {'ours 20k spray':>14s} "
              f"{'ref/ours':>8s} | {'ask() mcmc':>10s} {'ref/ask':>7s} {'ask() map':>9s}")
    rows, details, skipped = [], [], []
    stop = False
    for n in sorted(args.sizes):
        if stop:
            skipped.append(n)
            continue
        x_long = torch.tensor(xs[:n], dtype=torch.long)
        y_ref = torch.tensor(vals[:n], dtype=torch.float32).view(-1, 1)
        x, y = torch.tensor(xs[:n], dtype=torch.float64), standardised(vals[:n])
        chain_ref.sweeps(x_long, y_ref, args.sweeps_between)
        post = HyperPosterior(spectrum, GPData(x, y))
        chain = post.sample(post.feasible(chain), args.sweeps_between, random.Random(args.seed + n))[-1]
        m = {k: [] for k in ("r_s", "r_i", "r_a", "r", "o_m", "o_a", "o", "o20", "ask", "map")}
        for r in range(args.repeats):
            seed = 1000 * n + r
            o_m, o_a, o_pt = ours_step(spectrum, x, y, chain, seed, 5000)
            m["o_m"].append(o_m)
            m["o_a"].append(o_a)
            m["o"].append(o_m + o_a)
            r_s, r_i, r_a, r_pt = chain_ref.step(x_long, y_ref, seed)
            m["r_s"].append(r_s)
            m["r_i"].append(r_i)
            m["r_a"].append(r_a)
            m["r"].append(r_s + r_i + r_a)
            o20_m, o20_a, o20_pt = ours_step(spectrum, x, y, chain, seed, 20000)
            m["o20"].append(o20_m + o20_a)
            m["ask"].append(ours_ask(problem, xs, vals, n, "mcmc", args.ask_burn))
            m["map"].append(ours_ask(problem, xs, vals, n, "map", args.ask_burn))
            details.append(f"  n={n} repeat {r}: reference {m['r'][-1]:.2f}s (suggests a point of value "
                           f"{problem.value(r_pt.numpy().astype(float)):.3f}), ours {m['o'][-1]:.2f}s "
                           f"({problem.value(o_pt.numpy().astype(float)):.3f}), ours 20k "
                           f"{m['o20'][-1]:.2f}s ({problem.value(o20_pt.numpy().astype(float)):.3f}), ask() mcmc "
                           f"{m['ask'][-1]:.2f}s, ask() map {m['map'][-1]:.2f}s")
            print(details[-1], file=sys.stderr, flush=True)
            if m["r"][-1] > args.ref_limit:
                stop = True
                details.append(f"  n={n}: a reference step took {m['r'][-1]:.0f}s > --ref-limit {args.ref_limit:.0f}s; "
                               "its remaining repeats and larger sizes not run")
                break

        def med(k, m=m):
            return statistics.median(m[k])

        def cell(k, w):
            return f"{med(k):{w - 1}.2f}s"

        rows.append(f"{n:4d} | {cell('r_s', 11)} {cell('r_i', 11)} {cell('r_a', 9)} {cell('r', 8)} | "
                    f"{cell('o_m', 10)} {cell('o_a', 6)} {cell('o', 8)} {med('r') / med('o'):7.1f}x | "
                    f"{cell('o20', 14)} {med('r') / med('o20'):7.1f}x | {cell('ask', 10)} "
                    f"{med('r') / med('ask'):6.1f}x {cell('map', 9)}")
        rows.append(f"{'':4s} | {'':11s} {'':11s} {'':9s} {'(' + format(min(m['r']), '.2f') + ')':>8s} | "
                    f"{'':10s} {'':6s} {'(' + format(min(m['o']), '.2f') + ')':>8s} "
                    f"{min(m['r']) / min(m['o']):7.1f}x | {'(' + format(min(m['o20']), '.2f') + ')':>14s} "
                    f"{min(m['r']) / min(m['o20']):7.1f}x | {'(' + format(min(m['ask']), '.2f') + ')':>10s} "
                    f"{min(m['r']) / min(m['ask']):6.1f}x {'(' + format(min(m['map']), '.2f') + ')':>9s}")
        print(f"n={n} done ({time.perf_counter() - t_start:.0f}s so far)", file=sys.stderr, flush=True)

    print(header)
    print("\n".join(rows))
    if skipped:
        print(f"not run: n = {', '.join(map(str, skipped))} (a reference step at a smaller n exceeded --ref-limit)")
    print("\nper repeat (objective value of the suggested point, lower is better; min of the data at n: "
          + ", ".join(f"{n}: {vals[:n].min():.3f}" for n in sorted(args.sizes) if n not in skipped) + "):")
    print("\n".join(details))
    print(f"\ntotal run time {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
