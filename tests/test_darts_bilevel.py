"""DARTS' bilevel search: on a target made by a fixed 3x3 convolution it derives the 3x3 conv (the one
alternative that can fit it) on every seed, first and second order; the second-order step's
finite-difference gradient equals the exact gradient through the unrolled step; the alpha step leaves
weights and batch-norm statistics as they were; same seed, same result; settings errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import nas
from nas.darts.derive import derive
from nas.darts.mixed import architecture_weights, build_supernet_module
from nas.darts.settings import DartsSettings
from nas.darts.supernet import build_supernet
from search_spaces.darts import darts_space
from workers.darts_bilevel import BilevelSearch, split_halves

OPS = {
    "conv1x1": ("conv", {"out_channels": 1, "kernel_size": 1}),
    "conv3x3": ("conv", {"out_channels": 1, "kernel_size": 3}),
    "pool": ("avgpool", {"kernel_size": 3, "stride": 1, "padding": 1}),
    "skip": ("identity", {}),
}


def one_edge_space() -> nas.SearchSpace:
    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        op, p = OPS[a["op"]]
        g.add_op("edge", op, "input", choice="op", **p)
        return g

    return nas.SearchSpace("one_edge", [nas.Categorical("op", tuple(OPS), op_choice=True)], build)


def conv_target(seed: int, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images and their convolution with a fixed 3x3 kernel whose centre and sum are zero, so the
    target is uncorrelated with the input itself (skip, 1x1 conv) and with its 3x3 average (pool)."""
    g = torch.Generator().manual_seed(1000 + seed)
    k = torch.randn(3, 3, generator=g)
    ring = torch.ones(3, 3, dtype=torch.bool)
    ring[1, 1] = False
    k[1, 1] = 0.0
    k[ring] -= k[ring].mean()
    x = torch.randn(n, 1, 8, 8, generator=g)
    return x, F.conv2d(x, k.view(1, 1, 3, 3), padding=1)


def search_one_edge(seed: int, order: int, epochs: int = 20, dtype=torch.float32):
    x, y = conv_target(seed)
    net = build_supernet(one_edge_space())
    torch.manual_seed(seed)
    model = build_supernet_module(net.graph).to(dtype)
    settings = DartsSettings(epochs=epochs, batch_size=32, seed=seed, order=order)
    halves = [t.to(dtype) for t in split_halves(x, y, seed)]
    return net, BilevelSearch(model, *halves, settings, "cpu", loss_fn=F.mse_loss)


@pytest.mark.parametrize("seed, order", [(0, 1), (1, 1), (2, 1), (0, 2)])
def test_darts_derives_the_only_op_that_fits_the_target(seed, order):
    net, search = search_one_edge(seed, order)
    while not search.done:
        metrics = search.run_epoch()
    w = architecture_weights(search.model)["op"]
    assert derive(net, {"op": w}) == {"op": "conv3x3"}
    assert w[1] > max(w[0], w[2], w[3]) + 0.01, w  # by a margin, with the paper's alpha lr 3e-4
    assert metrics["search_loss"] < 0.1 * search.y_a.var().item()  # the supernet fits the target


def test_second_order_gradient_is_the_exact_gradient_through_the_unrolled_step():
    _, search = search_one_edge(3, order=2, dtype=torch.float64)
    model, s = search.model, search.settings
    xw, yw, xa, ya = search.x_w[:32], search.y_w[:32], search.x_a[:32], search.y_a[:32]
    search.weight_step(xw, yw)  # a momentum buffer now enters the unrolled step
    with torch.no_grad():
        model.edge.alpha.copy_(torch.tensor([0.2, -0.1, 0.3, 0.0], dtype=torch.float64))
    lr = 0.2
    fd = search.alpha_gradient(xw, yw, xa, ya, lr)[0]

    named = dict(model.named_parameters())
    w = {n: p.detach().clone().requires_grad_() for n, p in named.items() if not n.endswith("alpha")}
    a = {"edge.alpha": named["edge.alpha"].detach().clone().requires_grad_()}

    def loss(weights, x, y):
        return F.mse_loss(functional_call(model, {**weights, **a}, (x,)), y)

    grads = torch.autograd.grad(loss(w, xw, yw), list(w.values()), create_graph=True)
    unrolled = {}
    for (n, p), g in zip(w.items(), grads, strict=True):
        buf = search.w_opt.state[named[n]]["momentum_buffer"]
        unrolled[n] = p - lr * (g + s.w_weight_decay * p + s.w_momentum * buf)
    exact = torch.autograd.grad(loss(unrolled, xa, ya), [a["edge.alpha"]])[0]
    without_implicit_term = torch.autograd.grad(loss({n: u.detach() for n, u in unrolled.items()}, xa, ya),
                                                [a["edge.alpha"]])[0]
    torch.testing.assert_close(fd, exact, rtol=1e-5, atol=1e-9)
    assert (exact - without_implicit_term).abs().max() > 1000 * (fd - exact).abs().max()


@pytest.mark.parametrize("order", [1, 2])
def test_an_epoch_on_the_darts_supernet_moves_only_what_each_step_should(order):
    torch.manual_seed(0)
    net = build_supernet(darts_space(), options={"C": 4, "layers": 3})
    model = build_supernet_module(net.graph)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
    settings = DartsSettings(epochs=2, batch_size=16, order=order, seed=0)
    search = BilevelSearch(model, *split_halves(x, y, 0), settings, "cpu", x_val=x[:32], y_val=y[:32])
    xw, yw, xa, ya = search.x_w[:16], search.y_w[:16], search.x_a[:16], search.y_a[:16]
    before_w = [p.detach().clone() for p in search.weights]
    before_a = [a.detach().clone() for a in search.alphas]
    before_b = [b.detach().clone() for b in model.buffers()]
    search.alpha_step(xw, yw, xa, ya, lr=0.025)
    assert all(torch.equal(p, b) for p, b in zip(search.weights, before_w, strict=True))
    assert sum(not torch.equal(a, b) for a, b in zip(search.alphas, before_a, strict=True)) == 28
    if order == 2:  # its extra forwards leave the running statistics as they were
        assert all(torch.equal(b, c) for b, c in zip(model.buffers(), before_b, strict=True))
    search.weight_step(xw, yw)
    assert sum(not torch.equal(p, b) for p, b in zip(search.weights, before_w, strict=True)) > 0
    metrics = search.run_epoch()
    assert metrics["epoch"] == 1 and 0.0 <= metrics["val_accuracy"] <= 1.0
    weights = search.history[-1]["weights"]
    assert len(weights) == 28 and all(abs(sum(w) - 1.0) < 1e-6 for w in weights.values())


def test_same_seed_same_alphas():
    runs = []
    for _ in range(2):
        _, search = search_one_edge(5, order=1, epochs=2)
        search.run_epoch()
        search.run_epoch()
        runs.append(architecture_weights(search.model)["op"])
    assert runs[0] == runs[1]


def test_settings_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"no option\(s\) \['lr'\]"):
        DartsSettings.from_options({"lr": 0.1})
    with pytest.raises(ValueError, match="'order' must be 1"):
        DartsSettings.from_options({"order": 3})
    with pytest.raises(ValueError, match="gumbel"):
        DartsSettings.from_options({"sampling": "gumbel", "order": 2})
    s = DartsSettings.from_options({"alpha_betas": [0.5, 0.9], "w_lr": 1}, seed=7)
    assert s.alpha_betas == (0.5, 0.9) and s.w_lr == 1.0 and s.seed == 7


def test_optimize_explains_that_darts_needs_a_space_and_data():
    with pytest.raises(ValueError, match="needs a search space with op-choice variables and a data set"):
        nas.optimize(lambda a: 0.0, [nas.Categorical("op", ("a", "b"))], strategy="darts", budget=2)


def test_darts_core_modules_import_no_worker_code():
    """The bilevel optimisation is worker code (`workers.darts_bilevel`); `nas.darts` never imports workers."""
    from conftest import modules_loaded_by

    loaded = modules_loaded_by("nas.darts.mixed, nas.darts.relax, nas.darts.supernet, nas.darts.derive, "
                               "nas.darts.settings, nas.darts.plan")
    assert not [m for m in loaded if m.split(".")[0] == "workers"]


def test_a_resource_penalty_moves_the_alphas_towards_cheaper_ops():
    """Same seed and data, with and without resource_penalty: the penalised search ends with a lower expected
    FLOP count, less weight on the costliest op (the 3x3 convolution) and more on a free one (skip)."""
    ends = {}
    for weight in (0.0, 20.0):
        x, y = conv_target(0, n=128)
        net = build_supernet(one_edge_space())
        torch.manual_seed(0)
        model = build_supernet_module(net.graph)
        settings = DartsSettings(epochs=3, batch_size=32, seed=0, resource_penalty=weight, resource="flops")
        search = BilevelSearch(model, *split_halves(x, y, 0), settings, "cpu", loss_fn=F.mse_loss)
        while not search.done:
            metrics = search.run_epoch()
        ends[weight] = (metrics["expected_flops"], architecture_weights(model)["op"])
    (flops_plain, w_plain), (flops_penalised, w_penalised) = ends[0.0], ends[20.0]
    assert flops_penalised < flops_plain
    conv3x3, skip = list(OPS).index("conv3x3"), list(OPS).index("skip")
    assert w_penalised[conv3x3] < w_plain[conv3x3] and w_penalised[skip] > w_plain[skip], (w_plain, w_penalised)


def test_resource_penalty_settings_are_checked():
    with pytest.raises(ValueError, match="resource"):
        DartsSettings(resource="latency").check()
    with pytest.raises(ValueError, match="resource_penalty"):
        DartsSettings(resource_penalty=-1.0).check()


def _supernet_and_data():
    torch.manual_seed(0)
    net = build_supernet(darts_space(), options={"C": 4, "layers": 3})
    return build_supernet_module(net.graph), torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))


def _cosine(a, b) -> float:
    a, b = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return float(a @ b / (a.norm() * b.norm()))


def test_the_second_order_finite_difference_term_is_float32_under_amp():
    """bf16 autocast (the CPU's AMP type, as on an Ampere GPU) cannot resolve the O(eps) difference between the two
    gradients: computed under it the term points elsewhere (cosine ~0.3 here); the search computes it in float32."""
    import copy

    model, x, y = _supernet_and_data()
    searches = {amp: BilevelSearch.on_training_split(copy.deepcopy(model), x, y, DartsSettings(
        epochs=1, batch_size=32, order=2, seed=0, amp=amp), "cpu") for amp in (False, True)}
    ref = searches[False]
    xw, yw, xa, ya = ref.x_w[:32], ref.y_w[:32], ref.x_a[:32], ref.y_a[:32]
    v = [g.detach() for g in ref._grads(ref._loss(xa, ya)[0], ref.weights)]
    terms = {}
    for amp, s in searches.items():
        w = [p.detach().clone() for p in s.weights]
        terms[amp] = s.hessian_term(xw, yw, w, v)
        with torch.no_grad():
            for p, b in zip(s.weights, w, strict=True):
                p.copy_(b)
    torch.testing.assert_close(terms[True], terms[False])
    amp = searches[True]  # the same term with its forwards under autocast, as it was computed before
    w = [p.detach().clone() for p in amp.weights]
    eps = 0.01 / torch.sqrt(sum((g ** 2).sum() for g in v))
    grads = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, b, g in zip(amp.weights, w, v, strict=True):
                p.copy_(b + sign * eps * g)
        grads.append(amp._grads(amp._loss(xw, yw)[0], amp.alphas))
    under_autocast = [(gp - gm) / (2 * eps) for gp, gm in zip(*grads, strict=True)]
    assert _cosine(under_autocast, terms[False]) < 0.9
    with torch.no_grad():
        for p, b in zip(amp.weights, w, strict=True):
            p.copy_(b)
    # the whole second-order alpha gradient under AMP (its other parts in bf16) against float32
    full = {a: s.alpha_gradient(xw, yw, xa, ya, 0.025) for a, s in searches.items()}
    assert _cosine(full[True], full[False]) > 0.97


def test_a_search_on_the_training_split_holds_the_data_once():
    """The data set is on the device once (the worker's cache); the halves are indices into it, not copies."""
    import copy

    model, x, y = _supernet_and_data()
    settings = DartsSettings(epochs=1, batch_size=16, order=1, seed=0)

    def copies_held(search) -> int:  # bytes of the tensors the search holds beside the data set and the model
        given = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
        seen = {}
        for value in vars(search).values():
            for t in value if isinstance(value, tuple | list) else [value]:
                if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                    if t.untyped_storage().data_ptr() not in given:
                        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values())

    once = BilevelSearch.on_training_split(copy.deepcopy(model), x, y, settings, "cpu")
    assert copies_held(once) == 2 * 32 * 8  # the two halves' int64 indices
    halves = BilevelSearch(copy.deepcopy(model), *split_halves(x, y, 0), settings, "cpu")  # as it was
    assert copies_held(halves) >= x.nbytes + y.nbytes  # a second copy of the training split
    assert torch.equal(once.x_w, halves.x_w) and torch.equal(once.y_a, halves.y_a)  # the same split
    m1, m2 = (s.run_epoch() for s in (once, halves))
    assert m1["train_loss"] == m2["train_loss"] and m1["search_loss"] == m2["search_loss"]
