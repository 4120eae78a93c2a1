"""The training loop: learns digits, is deterministic per seed, resumes exactly, fails loudly on NaN."""

from __future__ import annotations

import io

import pytest
import torch

import nas
from nas.graph import ArchGraph
from workers.data import from_arrays, load_dataset
from workers.training import (
    CandidateFailed,
    Trainer,
    TrainSettings,
    evaluate,
    measure_latency,
    recalibrate_bn,
    train_candidate,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_graph(channels: int = 16, aux: bool = False) -> ArchGraph:
    """conv-bn-relu x2, global average pool, linear: 1x8x8 digits -> 10 classes."""
    g = ArchGraph((1, 8, 8))
    x = "input"
    for i in range(2):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=channels, kernel_size=3)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
        if aux and i == 0:
            a = g.add_op("aux_pool", "global_avgpool", x, aux=True)
            g.add_op("aux_fc", "linear", a, out_features=10, aux=True)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def _model(g: ArchGraph, seed: int = 0):
    torch.manual_seed(seed)
    return nas.build(g)


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "epoch_seconds")}


def test_tiny_net_learns_digits_and_reports_every_epoch(digits):
    reports = []
    out = train_candidate(_model(tiny_graph()), digits, epochs=3, batch_size=32, lr=0.1,
                          report=reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert {"epoch", "val_accuracy", "val_loss", "train_loss", "train_seconds"} <= set(r)
    assert reports[-1]["val_accuracy"] > 0.5  # chance is 0.1
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    secs = [r["train_seconds"] for r in reports]
    assert 0 < secs[0] < secs[1] < secs[2]
    assert out["val_accuracy"] == reports[-1]["val_accuracy"] and len(out["history"]) == 3
    assert reports[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine reaches zero


def test_training_is_deterministic_per_seed(digits):
    def run(seed):
        out = train_candidate(_model(tiny_graph(8), seed), digits, epochs=2, batch_size=64, seed=seed)
        return [_untimed(h) for h in out["history"]]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_resume_from_state_continues_exactly(digits):
    settings = TrainSettings(epochs=2, batch_size=64, optimizer="adamw", lr=0.01, seed=5)
    straight = Trainer(_model(tiny_graph(8)), digits, settings)
    straight.run_epoch()
    second = straight.run_epoch()

    first = Trainer(_model(tiny_graph(8)), digits, settings)
    first.run_epoch()
    buf = io.BytesIO()
    torch.save({"model": first.model.state_dict(), "state": first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    torch.manual_seed(123)  # disturb the global RNG: the state must restore it
    resumed = Trainer(_model(tiny_graph(8), seed=99), digits, settings)
    resumed.model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["state"])
    again = resumed.run_epoch()
    assert resumed.done and again["epoch"] == 2
    assert _untimed(again) == _untimed(second)
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    for name, p in expected.items():
        assert torch.equal(p, got[name]), name


def _with_train_inputs(digits, x):
    d = digits
    return from_arrays(x.numpy(), d.y_train.numpy(), d.x_val.numpy(), d.y_val.numpy(), d.x_test.numpy(),
                       d.y_test.numpy(), name="digits")


def test_nan_loss_raises_candidate_failed(digits):
    x = digits.x_train.clone()
    x[:] = float("nan")
    bad = _with_train_inputs(digits, x)
    with pytest.raises(CandidateFailed, match=r"^NaN loss at epoch 1 step 1$"):
        train_candidate(_model(tiny_graph(8)), bad, epochs=1)


def test_nan_loss_names_the_later_step_and_epoch(digits):
    x = digits.x_train.clone()
    x[5] = float("inf")  # one poisoned example: the step whose batch holds it fails
    bad = _with_train_inputs(digits, x)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    step = int((perm == 5).nonzero()) // 100 + 1
    with pytest.raises(CandidateFailed, match=rf"^NaN loss at epoch 1 step {step}$"):
        train_candidate(_model(tiny_graph(8)), bad, epochs=2, batch_size=100)


def test_aux_heads_are_trained(digits):
    g = tiny_graph(8, aux=True)
    model = _model(g)
    before = model.aux_fc.weight.detach().clone()
    train_candidate(model, digits, epochs=1, batch_size=64)
    assert not torch.equal(before, model.aux_fc.weight)  # only the aux loss reaches this head
    model.eval()
    model(digits.x_val[:4])
    assert model.aux_outputs == []


def test_aux_weight_is_a_setting(digits):
    def aux_head_after(aux_weight):
        model = _model(tiny_graph(8, aux=True))
        before = model.aux_fc.weight.detach().clone()
        train_candidate(model, digits, epochs=1, batch_size=64, weight_decay=0.0, aux_weight=aux_weight)
        return before, model.aux_fc.weight.detach()

    assert torch.equal(*aux_head_after(0.0))  # no loss reaches the aux head
    assert not torch.equal(*aux_head_after(0.3))
    with pytest.raises(ValueError, match="unknown setting 'aux_wieght'"):
        train_candidate(_model(tiny_graph(8)), digits, aux_wieght=0.1)


def test_max_seconds_stops_after_evaluating(digits):
    reports = []
    out = train_candidate(_model(tiny_graph(8)), digits, epochs=5, batch_size=8, max_seconds=1e-6,
                          report=reports.append)
    assert len(reports) == 1 and out["time_limited"] and out["steps"] == 1
    assert 0 <= out["val_accuracy"] <= 1


def test_bn_recalibration_estimates_the_statistics_of_the_given_examples(digits):
    g = ArchGraph((1, 8, 8))
    g.add_op("bn", "bn", "input", momentum=0.5)
    g.add_op("pool", "global_avgpool", "bn")
    g.add_op("fc", "linear", "pool", out_features=10)
    model = _model(g).eval()
    x = digits.x_train[:300] * 3 + 2
    recalibrate_bn(model, x, batch_size=100)
    torch.testing.assert_close(model.bn.running_mean, x.mean((0, 2, 3)))
    per_batch_var = torch.stack([x[i:i + 100].var((0, 2, 3)) for i in range(0, 300, 100)]).mean(0)
    torch.testing.assert_close(model.bn.running_var, per_batch_var)
    assert model.bn.momentum == 0.5 and not model.training


def test_bn_recalibration_is_a_setting(digits):
    def val_loss(n):
        return train_candidate(_model(tiny_graph(8)), digits, epochs=1, bn_recalibration=n)["val_loss"]

    assert val_loss(0) != val_loss(256)


def test_evaluate_and_latency(digits):
    model = _model(tiny_graph(8)).eval()
    res = evaluate(model, digits.x_val, digits.y_val, batch_size=50)
    with torch.no_grad():
        logits = model(digits.x_val)
    assert res["accuracy"] == pytest.approx((logits.argmax(1) == digits.y_val).float().mean().item())
    loss = torch.nn.functional.cross_entropy(logits, digits.y_val).item()
    assert res["loss"] == pytest.approx(loss, rel=1e-5)
    assert not model.training
    seconds = measure_latency(model, (1, 8, 8), "cpu", batch_size=2, reps=5, warmup=1)
    assert 0 < seconds < 1


@pytest.mark.parametrize("key, value", [("optimizer", "adam"), ("epochs", 0), ("lr", -1.0),
                                        ("schedule", "linear"), ("label_smoothing", 1.0), ("batch_size", 1.5),
                                        ("max_seconds", 0), ("bn_recalibration", -1)])
def test_bad_settings_are_named(digits, key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        train_candidate(_model(tiny_graph(4)), digits, **{"epochs": 1, key: value})
