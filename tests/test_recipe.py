"""A paper's training recipe in the worker: learning-rate schedules and warm-up (nas.lr_schedule), RMSprop,
gradient clipping, drop-path (nas.drop_path), and a run with all of them resuming exactly."""

from __future__ import annotations

import io

import pytest
import torch

import nas
from nas.drop_path import DropPath, drop_path_nodes
from nas.graph import ArchGraph
from nas.lr_schedule import LRSchedule
from workers.data import load_dataset
from workers.training import Trainer, TrainSettings, train_candidate


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_warm_up_then_cosine_step_and_constant():
    s = LRSchedule(1.0, "cosine", steps_per_epoch=10, epochs=3, warmup_epochs=1)
    assert [s.at(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3]) and s.at(9) == 1.0
    assert s.at(10) == 1.0 and s.at(20) == pytest.approx(0.5) and s.at(30) == pytest.approx(0.0)
    plain = LRSchedule(1.0, "cosine", steps_per_epoch=10, epochs=3)  # without warm-up: the search's as before
    assert plain.at(15) == pytest.approx(0.5) and plain.at(0) == 1.0
    step = LRSchedule(0.1, "step", steps_per_epoch=5, epochs=10, milestones=(2, 5), gamma=0.1)
    assert [step.at(e * 5) for e in (0, 1, 2, 4, 5, 9)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert LRSchedule(0.3, "constant", 4, 2, warmup_epochs=0.5).at(7) == 0.3


def test_plateau_divides_after_patience_epochs_without_improvement_and_resumes():
    s = LRSchedule(1.0, "plateau", 1, 20, gamma=0.1, patience=2)
    lowered = [s.end_epoch(v) for v in (0.5, 0.6, 0.6, 0.6, 0.6, 0.7, float("nan"), 0.7, 0.7)]
    assert lowered == [False, False, False, False, True, False, False, False, True]
    assert s.at(0) == pytest.approx(0.01)
    copy = LRSchedule(1.0, "plateau", 1, 20, gamma=0.1, patience=2)
    copy.load_state_dict(s.state_dict())
    assert copy.at(0) == s.at(0) and copy.end_epoch(0.7) == s.end_epoch(0.7)


def tiny(channels: int = 8) -> ArchGraph:
    g = ArchGraph((1, 8, 8))
    x = g.add_op("conv0", "conv", "input", out_channels=channels, kernel_size=3)
    x = g.add_op("bn0", "bn", x)
    x = g.add_op("relu0", "relu", x)
    y = g.add_op("conv1", "conv", x, out_channels=channels, kernel_size=3)
    y = g.add_op("bn1", "bn", y)
    x = g.add_op("add", "relu", [y, x], merge="sum")  # a residual block: bn1 is a branch into a sum
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return nas.build(tiny())


def test_the_trainer_follows_the_schedule_it_is_given(digits):
    reports = []
    train_candidate(_model(), digits, epochs=4, batch_size=128, lr=0.1, schedule="step", lr_milestones="2,3",
                    lr_gamma=0.5, report=reports.append)
    assert [r["lr"] for r in reports] == pytest.approx([0.1, 0.05, 0.025, 0.025])  # the rate of the next step
    warm = Trainer(_model(), digits, TrainSettings(epochs=2, batch_size=128, warmup_epochs=1, lr=0.2))
    assert warm.lr_at(0) == pytest.approx(0.2 / warm.steps_per_epoch) and warm.lr_at(warm.steps_per_epoch - 1) == 0.2


def test_rmsprop_learns_and_clipping_bounds_every_step(digits):
    # Inception's epsilon 1.0 damps the step while the squared-gradient average is small: at the start RMSprop
    # moves about as SGD with momentum at the same rate (chance is 0.1)
    out = train_candidate(_model(), digits, epochs=2, batch_size=64, optimizer="rmsprop", lr=0.3)
    assert out["val_accuracy"] > 0.4
    trainer = Trainer(_model(), digits, TrainSettings(epochs=1, batch_size=64, lr=1.0, momentum=0.0, weight_decay=0.0,
                                                      grad_clip=1e-3, schedule="constant", bn_recalibration=0))
    before = torch.cat([p.detach().flatten().clone() for p in trainer.params])
    trainer.run_epoch()
    after = torch.cat([p.detach().flatten() for p in trainer.params])
    # plain SGD at lr 1 with the gradient's norm clipped to 1e-3: no step moves the weights further than that
    assert 0 < (after - before).norm() <= trainer.steps_per_epoch * 1e-3 * (1 + 1e-4)


def test_drop_path_drops_the_branches_that_feed_sums():
    assert drop_path_nodes(tiny()) == ["bn1"]  # not relu0: the identity shortcut is not dropped
    darts = nas.get_space("darts").graph(preset="darts_v2", num_classes=10, input_shape=(3, 32, 32))
    nodes = drop_path_nodes(darts)
    ops = {darts.nodes[n]["op"] for n in nodes}
    assert nodes and "identity" not in ops and ops <= {"sep_conv", "dil_conv", "maxpool", "avgpool",
                                                         "factorized_reduce"}
    model = _model()
    drop = DropPath(model, ["bn1"])
    drop.set_epoch(3, 4, 0.4)
    assert drop.p == pytest.approx(0.3)
    x = torch.randn(64, 1, 8, 8)
    seen = {}
    model.bn1.register_forward_hook(lambda m, i, o: seen.update(out=o))
    model.train()
    model(x)
    zeroed = (seen["out"].flatten(1) == 0).all(1)
    assert 5 < int(zeroed.sum()) < 40  # about 30% of the examples
    kept = seen["out"][~zeroed]
    model.eval()
    model(x)
    assert not (seen["out"].flatten(1) == 0).all(1).any()  # never in evaluation
    drop.remove()
    assert kept.abs().sum() > 0


def test_a_full_recipe_resumes_exactly(digits):
    settings = TrainSettings(epochs=3, batch_size=128, optimizer="rmsprop", lr=0.005, schedule="plateau",
                             plateau_patience=0, lr_gamma=0.5, warmup_epochs=0.5, grad_clip=2.0, drop_path=0.3,
                             augment="crop:1,cutout:2", seed=2)
    straight = Trainer(_model(), digits, settings, drop_path_nodes=["bn1"])
    want = [_untimed(straight.run_epoch()) for _ in range(3)]
    first = Trainer(_model(), digits, settings, drop_path_nodes=["bn1"])
    first.run_epoch()
    weights, state = io.BytesIO(), io.BytesIO()
    torch.save(first.model.state_dict(), weights)
    torch.save(first.state_dict(), state)
    weights.seek(0)
    state.seek(0)
    torch.manual_seed(123)  # a fresh process would have other global RNG state
    resumed = Trainer(_model(7), digits, settings, drop_path_nodes=["bn1"])
    resumed.model.load_state_dict(torch.load(weights, weights_only=True))
    resumed.load_state_dict(torch.load(state, weights_only=True))
    got = [_untimed(resumed.run_epoch()) for _ in range(2)]
    assert got == want[1:]


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "epoch_seconds")}
