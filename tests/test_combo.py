"""COMBO: the diffusion kernel against a brute-force matrix exponential of the product graph, the priors,
the slice sampler, the hyperparameter posterior, seeding and state round-trips, batch asks, bad input
(constant objective, failures, an exhausted space) and that it beats random search on a small problem."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import nas
from nas.space import as_space
from nas.strategies import make_strategy
from nas.strategies.combo import Combo, ComboWarning
from nas.strategies.combo.acquisition import Moves, exhaustive, local_search
from nas.strategies.combo.gp import ComboGP, GPData, HyperPosterior, initial_theta
from nas.strategies.combo.kernel import DiffusionKernel, GraphSpectrum, laplacian, log_gram
from nas.strategies.combo.priors import log_prior_log_beta, log_prior_log_noise
from nas.strategies.combo.slice_sampling import slice_sample
from nas.strategies.random_search import assignment_key

FAST = {"n_burn": 5, "n_samples": 2, "n_spray": 200, "n_starts": 5}  # small settings for quick tests


def mixed_space() -> nas.SearchSpace:
    return as_space([nas.Categorical("a", ("x", "y")), nas.Ordinal("b", (1, 2, 3)),
                     nas.Categorical("c", ("p", "q", "r", "s"))])


def binary_space(n: int = 6) -> nas.SearchSpace:
    return as_space([nas.Categorical(f"x{i}", (0, 1)) for i in range(n)])


def quadratic(n: int = 6, seed: int = 3):
    q = np.random.default_rng(seed).standard_normal((n, n))

    def f(a: dict) -> float:
        x = np.array([a[f"x{i}"] for i in range(n)], dtype=float)
        return float(x @ q @ x)
    return f


# -- kernel ------------------------------------------------------------------------------------------


def brute_force_kernel(sizes, ordinal, log_beta) -> np.ndarray:
    """expm(-L) of the product graph with L the Kronecker sum of beta_i L_i, over all its vertices (in
    itertools.product order), divided by the product of the normalisers mean_k exp(-beta_i lam_ik)."""
    betas = np.exp(log_beta)
    total = np.zeros((math.prod(sizes),) * 2)
    norm = 1.0
    for i, (n, o) in enumerate(zip(sizes, ordinal, strict=True)):
        lap = laplacian(n, o)
        mats = [np.eye(k) for k in sizes]
        mats[i] = lap
        total += betas[i] * _kron_all(mats)
        norm *= np.mean(np.exp(-betas[i] * np.linalg.eigvalsh(lap)))
    return scipy.linalg.expm(-total) / norm


def _kron_all(mats):
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


def test_kernel_equals_the_diffusion_kernel_of_the_product_graph_and_is_psd():
    sizes, ordinal = [2, 3, 4], [False, True, False]
    spectrum = GraphSpectrum.of_domains(sizes, ordinal)
    points = torch.tensor(list(itertools.product(*map(range, sizes))), dtype=torch.float64)
    for log_beta in ([0.3, -0.5, 1.2], [-3.0, 2.0, 0.0], [4.0, -8.0, -1.0]):
        lb = torch.tensor(log_beta, dtype=torch.float64)
        ours = log_gram(spectrum, spectrum.log_factors(lb), points, points).exp().numpy()
        np.testing.assert_allclose(ours, brute_force_kernel(sizes, ordinal, lb.numpy()), atol=1e-10)
        assert np.linalg.eigvalsh(ours).min() > -1e-10


def test_categorical_factor_is_the_complete_graph_closed_form_and_ordinal_decays_with_distance():
    spectrum = GraphSpectrum.of_domains([5, 5], [False, True])
    beta = 0.7
    g = spectrum.factors(torch.tensor([math.log(beta)] * 2, dtype=torch.float64))
    off = (1 - math.exp(-5 * beta)) / (1 + 4 * math.exp(-5 * beta))
    np.testing.assert_allclose(g[0].numpy(), np.where(np.eye(5) > 0, 1.0, off), atol=1e-12)
    row = g[1, 0].numpy()  # value 0 of the path graph against values 0..4
    assert all(row[j] > row[j + 1] for j in range(4))


def test_gpytorch_kernel_module_batches_samples_and_gives_its_diagonal():
    spectrum = GraphSpectrum.of_domains([2, 3, 4], [False, True, False])
    kernel = DiffusionKernel(spectrum, batch_shape=torch.Size([3])).double()
    with torch.no_grad():
        kernel.log_beta.copy_(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    x = torch.tensor([[0, 0, 0], [1, 2, 3], [0, 1, 2], [1, 0, 1]], dtype=torch.float64)
    full = kernel(x, x).to_dense()
    assert full.shape == (3, 4, 4)
    for s in range(3):
        expected = log_gram(spectrum, spectrum.log_factors(kernel.log_beta[s]), x, x).exp()
        torch.testing.assert_close(full[s], expected)
    torch.testing.assert_close(kernel(x, x, diag=True), full.diagonal(dim1=-2, dim2=-1))


def test_moves_are_the_product_graph_neighbours():
    spectrum = GraphSpectrum.of_space(mixed_space())
    x = torch.tensor([[0, 0, 2]])
    got = {tuple(r) for r in Moves.of(spectrum).neighbours(x)[0].tolist()} - {(0, 0, 2)}
    assert got == {(1, 0, 2), (0, 1, 2), (0, 0, 0), (0, 0, 1), (0, 0, 3)}  # b=1 has one neighbour; c any other


# -- priors and the sampler --------------------------------------------------------------------------


def test_horseshoe_and_noise_log_densities_match_hand_computed_values():
    for beta, expected in ((5.0, math.log(math.log(3.0))), (1.0, math.log(math.log(51.0))),
                           (0.01, math.log(math.log(1 + 2 / (0.01 / 5) ** 2)))):
        assert float(log_prior_log_beta(math.log(beta))) == pytest.approx(expected, rel=1e-12)
    assert float(log_prior_log_beta(math.log(100.0) + 1e-9)) == -math.inf
    assert float(log_prior_log_beta(-12.5)) == -math.inf
    assert float(log_prior_log_noise(math.log(0.1))) == pytest.approx(math.log(math.log(2.0)), rel=1e-12)
    assert float(log_prior_log_noise(-13.0)) == -math.inf


def test_slice_sampler_reproduces_a_standard_normal_and_respects_a_bounded_support():
    rng = random.Random(0)
    x, xs = 3.0, []
    for _ in range(4000):
        x, _ = slice_sample(lambda v: -0.5 * v * v, x, rng)
        xs.append(x)
    assert statistics.mean(xs) == pytest.approx(0.0, abs=0.1)
    assert statistics.variance(xs) == pytest.approx(1.0, abs=0.1)
    x, ys = 0.5, []
    for _ in range(2000):  # exponential(1) on [0, inf): mean 1
        x, _ = slice_sample(lambda v: -v if v >= 0 else -math.inf, x, rng)
        ys.append(x)
    assert min(ys) >= 0 and statistics.mean(ys) == pytest.approx(1.0, abs=0.12)
    with pytest.raises(ValueError, match="log density"):
        slice_sample(lambda v: -math.inf, 0.0, rng)


def small_data(n: int = 30, seed: int = 0) -> tuple[GraphSpectrum, GPData]:
    g = torch.Generator().manual_seed(seed)
    spectrum = GraphSpectrum.of_domains([2, 3, 4, 2], [False, True, False, False])
    x = torch.stack([torch.randint(0, k, (n,), generator=g) for k in (2, 3, 4, 2)], 1).double()
    y = (x[:, 1] - 1.0) ** 2 + (x[:, 2] == 3).double() + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return spectrum, GPData(x, (y - y.mean()) / y.std())


def test_mcmc_sweeps_stay_in_the_support_and_the_map_fit_improves_the_log_posterior():
    spectrum, data = small_data()
    post = HyperPosterior(spectrum, data)
    theta0 = initial_theta(spectrum.d)
    chain = post.sample(theta0, 5, random.Random(1))
    assert all(math.isfinite(float(post.log_posterior(torch.tensor(t)))) for t in chain)
    assert len({tuple(t) for t in chain}) == 5  # it moves
    fitted = post.fit_map([theta0])
    assert float(post.log_posterior(torch.tensor(fitted))) > float(post.log_posterior(torch.tensor(theta0))) + 1


def test_fast_sweep_is_the_plain_coordinate_wise_slice_sampler():
    """The sweep's shortcuts (one eigendecomposition for mean / signal / noise, one factor swapped per
    beta) sample exactly what slice sampling each coordinate of the full log posterior samples."""
    spectrum, data = small_data()
    post = HyperPosterior(spectrum, data)

    def plain_sweep(theta: list[float], rng: random.Random) -> list[float]:
        theta = list(theta)

        def update(j: int) -> float:
            lp = lambda v: float(post.log_posterior(torch.tensor(theta[:j] + [v] + theta[j + 1:])))  # noqa: E731
            return slice_sample(lp, theta[j], rng)[0]
        for j in (0, 1, 2):
            theta[j] = update(j)
        betas = list(range(3, len(theta)))
        rng.shuffle(betas)
        for j in betas:
            theta[j] = update(j)
        return theta

    theta = fast = initial_theta(spectrum.d)
    rng_plain, rng_fast = random.Random(5), random.Random(5)
    for _ in range(3):
        theta, fast = plain_sweep(theta, rng_plain), post.sweep(fast, rng_fast)
        np.testing.assert_allclose(fast, theta, atol=1e-9)


def test_model_marginals_match_gpytorch_exact_prediction():
    spectrum, data = small_data()
    thetas = torch.tensor([initial_theta(spectrum.d), [0.1, 0.5, -3.0, -1.0, 0.5, 1.0, 2.0]], dtype=torch.float64)
    model = ComboGP(spectrum, data.x, data.y.expand(2, -1), thetas)
    test = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 1], [0, 1, 1, 0]], dtype=torch.float64)
    mean, var = model.marginals(test)
    with torch.no_grad():
        mvn = model(test.unsqueeze(0))
    torch.testing.assert_close(mean, mvn.mean)
    torch.testing.assert_close(var, mvn.variance)


def test_exhaustive_acquisition_scores_every_vertex_once_best_first_and_local_search_is_no_better():
    space = mixed_space()
    spectrum = GraphSpectrum.of_space(space)
    weights = torch.tensor([0.3, -1.0, 0.7], dtype=torch.float64)
    acq = lambda x: torch.sin(x.to(torch.float64) @ weights * 2.0)  # noqa: E731 - a bumpy function of vertices
    points, values = exhaustive(acq, spectrum)
    assert len(points) == space.size() == len({tuple(p) for p in points.tolist()})
    assert torch.all(values[:-1] >= values[1:])
    torch.testing.assert_close(values, acq(points))
    found, found_v = local_search(acq, spectrum, points[-1:], 3, 2, torch.Generator().manual_seed(0))
    assert float(found_v[0]) <= float(values[0])


# -- the strategy ------------------------------------------------------------------------------------


def run(strategy, f, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        a = strategy.ask()
        strategy.tell(a, f(a))
        out.append(a)
    return out


@pytest.mark.parametrize("fit", ["mcmc", "map"])
def test_same_seed_same_suggestions_and_state_round_trips_through_json(fit):
    space, f = binary_space(), quadratic()
    opts = dict(FAST, n_initial=4, fit=fit)
    a = make_strategy("combo", space, seed=7, **opts)
    b = make_strategy("combo", space, seed=7, **opts)
    assert run(a, f, 8) == run(b, f, 8)
    pending = a.ask()
    restored = make_strategy("combo", space, seed=0, **opts)
    restored.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in (a, restored):
        s.tell(pending, f(pending))
    assert run(a, f, 3) == run(restored, f, 3)
    other = make_strategy("combo", space, seed=8, **opts)
    assert run(other, f, 8) != run(make_strategy("combo", space, seed=7, **opts), f, 8)


def test_state_made_with_other_options_is_refused():
    s = make_strategy("combo", binary_space(), n_initial=3)
    with pytest.raises(ValueError, match="other options"):
        make_strategy("combo", binary_space(), n_initial=4).load_state_dict(s.state_dict())
    old = s.state_dict()  # a state saved before the options n_exhaustive, incumbent and warp existed
    for key in ("n_exhaustive", "incumbent", "warp"):
        del old["options"][key]
    make_strategy("combo", binary_space(), n_initial=3).load_state_dict(old)
    with pytest.raises(ValueError, match="warp"):
        make_strategy("combo", binary_space(), n_initial=3, warp="yeo-johnson").load_state_dict(old)


def test_bad_options_raise_naming_the_option():
    with pytest.raises(ValueError, match="fit"):
        make_strategy("combo", binary_space(), fit="exact")
    with pytest.raises(ValueError, match="n_initial"):
        make_strategy("combo", binary_space(), n_initial=0)
    with pytest.raises(ValueError, match="incumbent"):
        make_strategy("combo", binary_space(), incumbent="best")
    with pytest.raises(ValueError, match="n_exhaustive"):
        make_strategy("combo", binary_space(), n_exhaustive=-1)
    with pytest.raises(ValueError, match="warp"):
        make_strategy("combo", binary_space(), warp="log")
    with pytest.raises(ValueError, match="no option"):
        make_strategy("combo", binary_space(), population_size=3)


def test_yeo_johnson_warp_keeps_the_order_spreads_a_skewed_top_and_reproduces():
    from nas.strategies.combo.strategy import _yeo_johnson

    values = np.array([10.0, 85.0, 88.0, 90.0, 91.0, 91.5, 70.0, 89.0])  # accuracies with one collapsed run
    warped = _yeo_johnson(values)
    assert list(np.argsort(warped)) == list(np.argsort(values))
    assert abs(warped.mean()) < 1e-9 and abs(warped.std() - 1.0) < 1e-9
    standardised = (values - values.mean()) / values.std()
    top = values > 80
    assert np.ptp(warped[top]) > 1.5 * np.ptp(standardised[top])  # the good candidates are told apart
    space, f = binary_space(), quadratic()
    opts = dict(FAST, n_initial=4, warp="yeo-johnson")
    first = run(make_strategy("combo", space, seed=3, **opts), f, 7)
    assert first == run(make_strategy("combo", space, seed=3, **opts), f, 7)


def test_combo_finds_the_optimum_of_a_small_problem_faster_than_random():
    space, f = binary_space(6), quadratic(6)
    best = max(f(dict(zip(space.names, bits, strict=True))) for bits in itertools.product((0, 1), repeat=6))

    def evaluations_to_optimum(strategy: str, seed: int, **opts) -> int:
        """Evaluations until the optimum is first seen (the search stops there: what follows does not count)."""
        s = make_strategy(strategy, space, seed=seed, **opts)
        for n in range(1, 65):
            a = s.ask()
            v = f(a)
            if v == best:
                return n
            s.tell(a, v)
        raise AssertionError(f"{strategy} seed {seed}: 64 evaluations of 64 points without the optimum")

    seeds = range(5)
    combo = [evaluations_to_optimum("combo", s, n_initial=5, fit="mcmc", n_burn=20, n_samples=3, n_spray=100,
                                    n_starts=5) for s in seeds]
    rand = [evaluations_to_optimum("random", s) for s in seeds]
    # random search needs 32.5 evaluations on average to hit one point of 64 without repeats
    assert statistics.mean(combo) < statistics.mean(rand), (combo, rand)


def test_batch_asks_are_distinct_kriging_believer():
    space, f = binary_space(8), quadratic(8)
    s = make_strategy("combo", space, seed=1, n_initial=6, **{k: v for k, v in FAST.items()})
    run(s, f, 6)
    batch = [s.ask() for _ in range(5)]  # no tells in between: pending points fantasised
    keys = {assignment_key(space, a) for a in batch}
    assert len(keys) == 5
    assert not keys & {k for k, _ in s.observations}
    for a in reversed(batch):  # tells in any order
        s.tell(a, f(a))
    assert s.pending == []


def test_constant_objective_warns_and_never_repeats():
    space = binary_space(5)
    s = make_strategy("combo", space, seed=0, n_initial=4, **FAST)
    with pytest.warns(ComboWarning, match="zero variance"):
        asked = run(s, lambda a: 1.0, 12)
    assert len({assignment_key(space, a) for a in asked}) == 12


def test_failures_are_left_out_of_the_gp_and_never_proposed_again():
    space, f = binary_space(5), quadratic(5)
    s = make_strategy("combo", space, seed=2, n_initial=4, **FAST)

    def flaky(a: dict) -> float:
        return math.nan if a["x0"] == 1 else f(a)
    with pytest.warns(ComboWarning, match="failed"):
        asked = run(s, flaky, 14)
    assert len({assignment_key(space, a) for a in asked}) == 14
    assert sum(v is None for _, v in s.observations) == sum(a["x0"] == 1 for a in asked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComboWarning)
        a = s.ask()  # the GP sees only successes; no NaN reaches it
    assert assignment_key(space, a) not in {k for k, _ in s.observations}


def test_too_few_successes_fall_back_to_random_with_a_warning():
    space = binary_space(4)
    s = make_strategy("combo", space, seed=0, n_initial=2, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(s, lambda a: None, 6)
    few = [w for w in caught if issubclass(w.category, ComboWarning) and "successful evaluation" in str(w.message)]
    assert len(few) == 1, [str(w.message) for w in few]  # once per success count, not at every ask


def test_exhausted_space_warns_and_repeats_instead_of_crashing():
    space = as_space([nas.Categorical("a", (0, 1)), nas.Ordinal("b", (0, 1, 2))])
    s = make_strategy("combo", space, seed=0, n_initial=2, **FAST)
    f = lambda a: float(a["a"] + a["b"])  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComboWarning)
        asked = run(s, f, 6)
    assert len({assignment_key(space, a) for a in asked}) == 6  # the whole space, no repeat before that
    with pytest.warns(ComboWarning, match="repeat"):
        run(s, f, 1)


def test_minimisation_through_optimize_with_mixed_variables():
    variables = [nas.Categorical("op", ("conv", "pool", "skip")), nas.Ordinal("depth", tuple(range(1, 9))),
                 nas.Ordinal("width", (8, 16, 32, 64))]

    def loss(a: dict) -> float:
        return abs(a["depth"] - 6) + abs(math.log2(a["width"]) - 5) + (a["op"] != "skip")
    history = nas.optimize(loss, variables, strategy="combo", budget=25, seed=0, mode="min", n_initial=8,
                           fit="map", n_spray=200, n_starts=5)
    assert len(history) == 25 and history.best_value <= 1.0
    assert isinstance(make_strategy("combo", as_space(variables)), Combo)


BUILTIN_SPACES = ("vgg", "inception", "resnet", "densenet", "highway", "darts", "nb201", "timeception", "video",
                  "vgg_stn", "siamese", "fcn", "detection")


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_combo_searches_every_built_in_space_on_its_architectures(name):
    """COMBO's product graph of each built-in space's variables, its GP fit and acquisition, on an objective
    computed from the architecture (fewer parameters is better); candidates that fail to build are told as
    failures and the search goes on."""
    space = nas.get_space(name)
    assert name in nas.list_spaces()

    def small(a: dict) -> float:
        return -math.log(nas.count_params(space.graph(a)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComboWarning)
        history = nas.optimize(small, space, strategy="combo", budget=9, seed=0, n_initial=5, fit="map",
                               n_spray=100, n_starts=4)
    keys = {assignment_key(space, space.validate(e.assignment)) for e in history.evaluations}
    assert len(history) == 9 and len(keys) == 9  # every assignment valid, none proposed twice
    assert any(e.value is not None for e in history.evaluations[5:]), [e.error for e in history.evaluations]
