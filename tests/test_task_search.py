"""The tasks beyond classification end to end: the generated data sets as sources of the loader table, the
worker's tasks (`workers.tasks`: contrastive, segmentation, detection, multilabel) training and scoring, the
search's default objective coming from the task, and ``nas search`` through real Ray on each task (strategies
rotated across the tasks; the other strategy x task pairs driven in process, each candidate really trained)."""

from __future__ import annotations

import builtins
import json
import math

import pytest
import torch

import nas
from nas.builder import build
from nas.cli import main
from nas.config import SearchConfig
from nas.drop_path import drop_path_nodes
from nas.registry import get_space
from nas.space import SpaceError
from nas.strategies import make_strategy
from nas.tasks import detection, multilabel, segmentation
from nas.train_settings import SettingsError, TrainSettings
from workers.data import load_dataset
from workers.tasks import task_for
from workers.train_evaluation import TrainEvaluation
from workers.trainable import _final, check_inputs
from workers.training import Trainer, evaluate_batches

# tiny data and spaces of each task: (data set, space, space options)
TASKS = {
    "contrastive": ("digit_pairs:pairs=64", "siamese", {}),
    "segmentation": ("digit_segmentation:images=40", "fcn", {}),
    "detection": ("digit_detection:images=40,side=32,proposals=8", "detection", {"proposals": 8}),
    "multilabel": ("multilabel_clips:clips=40,frames=8,side=8", "timeception", {"width": 8, "hidden": 0}),
}
OBJECTIVE = {"contrastive": "val_auc", "segmentation": "val_miou", "detection": "val_map", "multilabel": "val_map"}
TRAIN = {"epochs": 1, "batch_size": 16, "lr": 0.01, "optimizer": "adamw", "latency_reps": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data-cache"))


def _data(task, cache):
    return load_dataset(TASKS[task][0], cache_dir=cache)


def _graph(task, data, assignment=None):
    _, space_name, options = TASKS[task]
    space = get_space(space_name)
    return space.graph(assignment or space.defaults(), num_classes=data.num_classes, input_shape=data.input_shape,
                       **options)


def _train(task, data, assignment=None):
    g = _graph(task, data, assignment)
    check_inputs(g, data)
    torch.manual_seed(0)
    model = build(g)
    task_for(data).check(tuple(model.output_shape), data)
    trainer = Trainer(model, data, TrainSettings(**TRAIN), "cpu", drop_path_nodes=drop_path_nodes(g))
    return trainer, trainer.run_epoch()


# -- in process ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_generated_set_is_a_source_naming_its_task_and_the_objective(task, cache):
    name = TASKS[task][0]
    data = load_dataset(name, cache_dir=cache)
    assert data.task == task
    cfg = SearchConfig(space=TASKS[task][1], train=TrainSettings(dataset=name, data_cache=cache))
    evaluation = TrainEvaluation(cfg)
    assert evaluation.default_objective == f"{OBJECTIVE[task]}:max"
    assert OBJECTIVE[task] in evaluation.reported_metrics() and "val_accuracy" not in evaluation.reported_metrics()
    assert f"({task} task)" in evaluation.describe()


def test_rts_digits_is_classification_stratified_by_class(cache):
    data = load_dataset("rts_digits:per_class=6", cache_dir=cache)
    assert data.task == "classification" and data.input_shape == (1, 32, 32) and data.classes == list("0123456789")
    assert TrainEvaluation(SearchConfig(train=TrainSettings(dataset="rts_digits:per_class=6", data_cache=cache))
                           ).default_objective == "val_accuracy:max"
    y = data.splits["test"].gather()["y"]
    assert sorted(set(y.tolist())) == list(range(10))  # 12 held-out examples cover every class (stratified)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_task_trains_and_scores_its_metric(task, cache):
    data = _data(task, cache)
    trainer, metrics = _train(task, data)
    main_metric = OBJECTIVE[task]
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics[main_metric] <= 1.0
    assert ("train_" + main_metric[4:] in metrics) == (task != "detection")  # detection scores no training batch
    final = _final(trainer, data)
    assert 0.0 <= final["test_" + main_metric[4:]] <= 1.0
    if task == "contrastive":  # tracking with the shared branch on generated sequences
        assert 0.0 <= final["test_success_rate"] <= 1.0


def test_scores_add_up_over_batches_as_over_the_whole_split(cache):
    """The split's score from batches of 7 is the nas.tasks function of the whole split's outputs."""
    for task, whole in (("segmentation", lambda out, b, k: segmentation.mean_iou(
                            segmentation.confusion_matrix(out, b["mask"], k))),
                        ("multilabel", lambda out, b, k: multilabel.mean_average_precision(out, b["y"])),
                        ("detection", lambda out, b, k: detection.map_at_50(
                            detection.detect(out, b["proposals"], k, (32, 32)), b["gt_boxes"], b["gt_labels"], k))):
        data = _data(task, cache)
        trainer, _ = _train(task, data)
        model = trainer.model.eval()
        split = data.splits["val"]
        batch = {k: torch.from_numpy(v) for k, v in split.gather().items()}
        with torch.no_grad():
            out = model(*trainer.network_inputs(batch))
            chunks = [({k: v[i:i + 7] for k, v in batch.items()}) for i in range(0, len(split), 7)]
            got = evaluate_batches(model, ((trainer.network_inputs(b), b) for b in chunks), trainer.task)
        assert got[OBJECTIVE[task][4:]] == pytest.approx(whole(out, batch, data.num_classes)), task


def test_targets_that_augmentation_would_not_move_refuse_it(cache):
    data = _data("segmentation", cache)
    with pytest.raises(SettingsError, match="would move the pixels .* segmentation targets"):
        Trainer(build(_graph("segmentation", data)), data, TrainSettings(**TRAIN, augment="crop:2"), "cpu")


def test_inputs_and_outputs_that_do_not_suit_the_data_are_named(cache):
    data = _data("detection", cache)
    space = get_space("detection")
    g16 = space.graph(space.defaults(), num_classes=10, input_shape=(1, 32, 32), proposals=16)
    with pytest.raises(ValueError, match="input 2 has shape \\[16, 4\\]; data set .*'proposals' is \\[8, 4\\]"):
        check_inputs(g16, data)
    with pytest.raises(ValueError, match="scores and 4 x 10 box deltas for each of 8 proposals"):
        task_for(data).check(tuple(build(g16).output_shape), data)
    pairs = _data("contrastive", cache)
    with pytest.raises(ValueError, match="takes 1 input\\(s\\).*gives 2: x \\[1, 16, 16\\], x2 \\[1, 16, 16\\]"):
        check_inputs(get_space("vgg").graph(get_space("vgg").defaults(), num_classes=2, input_shape=(1, 16, 16)),
                     pairs)


def test_darts_refuses_a_task_it_does_not_train(cache):
    from nas.evaluation import EvaluationError
    from workers.darts_trainable import SupernetEvaluation

    cfg = SearchConfig(space="fcn", strategy="darts", train=TrainSettings(dataset=TASKS["segmentation"][0],
                                                                          data_cache=cache))
    with pytest.raises(EvaluationError, match="segmentation task; the DARTS supernet trains classification only"):
        SupernetEvaluation(cfg).check()


def test_export_of_a_network_of_several_inputs_normalises_its_images(cache, tmp_path):
    """A pair network normalises both images, a detector its image but not its proposals: the TorchScript export
    with the search's preprocessing, fed raw arrays, gives the trained module's output on prepared inputs."""
    for task in ("contrastive", "detection"):
        data = _data(task, cache)
        trainer, _ = _train(task, data)
        model = trainer.model.eval()
        batch = {k: torch.from_numpy(v) for k, v in data.splits["val"].gather().items()}
        files = nas.export(_graph(task, data), "torchscript", tmp_path / f"{task}.pt", weights=model,
                           preprocessing=data.preprocessing)
        with torch.no_grad():
            want = model(*trainer.network_inputs(batch))
            got = torch.jit.load(str(files[0]))(*[batch[f].float() for f in data.inputs])
        assert torch.allclose(got, want, atol=1e-5), task


def test_nas_export_takes_the_task_of_the_run_s_data_set(cache):
    from nas.cli import _task_of

    assert _task_of({"dataset": TASKS["segmentation"][0], "data_cache": cache}) == "segmentation"
    assert _task_of({"dataset": "folder", "data_root": "/no/such/folder"}) is None and _task_of({}) is None


def test_exported_train_py_trains_each_task(cache, tmp_path, capsys, monkeypatch):
    """train.py, exported with the search's preprocessing for each task, reads the task's .npy arrays: given the
    worker's trained weights (--epochs 0) it scores the test split as the worker did, and it trains (one epoch),
    reporting the task's scores and saving weights that load into the architecture."""
    import runpy

    import numpy as np

    def run(folder, *argv):
        monkeypatch.setattr("sys.argv", ["train.py", "--data", str(folder), *argv])
        runpy.run_path(str(folder / "train.py"), run_name="__main__")
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("test_loss")).split()
        return out, dict(zip(line[::2], map(float, line[1::2]), strict=True))

    for task in sorted(TASKS):
        data = _data(task, cache)
        g = _graph(task, data)
        trainer, _ = _train(task, data)
        worker = trainer.evaluate("test")
        folder = tmp_path / task
        folder.mkdir()
        for split in ("train", "val", "test"):
            for f, a in data.splits[split].gather().items():
                np.save(folder / f"{f}_{split}.npy", a)
        nas.export(g, "python", folder / "net.py", weights=trainer.model, with_train=True,
                   preprocessing=data.preprocessing, task=task,
                   train_config={"batch_size": 8, "optimizer": "adamw", "lr": 0.01, "bn_recalibration": 16})
        _, scores = run(folder, "--epochs", "0", "--init-weights", str(folder / "net.weights.pt"))
        for k, v in worker.items():
            assert scores[f"test_{k}"] == pytest.approx(v, abs=1e-4), (task, k)
        out, scores = run(folder, "--epochs", "1")
        main_metric = OBJECTIVE[task][4:]
        assert f"training Net for {task}" in out and "the network normalises its images as the search did" in out
        assert 0.0 <= scores[f"test_{main_metric}"] <= 1.0 and f"val_{main_metric}" in out
        build(g).load_state_dict(torch.load(folder / "net.trained.pt", weights_only=True))


def test_exported_train_py_trains_a_task_as_the_worker_does(cache, tmp_path, capsys, monkeypatch):
    """train.py's one training loop gives a task what the worker gives it: from the same initial weights, two epochs
    of segmentation with drop-path (it rises from 0 in the first) and gradient clipping, and one of Siamese pairs
    with augmentation, print the worker's training and validation loss and scores; augmentation that would move the
    pixels but not the masks is refused, as the worker refuses it."""
    import runpy

    import numpy as np

    def run(folder, *argv):
        monkeypatch.setattr("sys.argv", ["train.py", "--data", str(folder), *argv])
        runpy.run_path(str(folder / "train.py"), run_name="__main__")
        return capsys.readouterr().out

    for task, settings in (("segmentation", {"epochs": 2, "drop_path": 0.2, "grad_clip": 1.0}),
                           ("contrastive", {"augment": "crop:2,flip"})):
        data = _data(task, cache)
        g = _graph(task, data)
        folder = tmp_path / task
        folder.mkdir()
        for split in ("train", "val"):
            for f, a in data.splits[split].gather().items():
                np.save(folder / f"{f}_{split}.npy", a)
        config = {**TRAIN, "batch_size": 8, "bn_recalibration": 16, **settings}
        torch.manual_seed(0)
        model = build(g)
        torch.save(model.state_dict(), folder / "init.pt")
        trainer = Trainer(model, data, TrainSettings(**config), "cpu", drop_path_nodes=drop_path_nodes(g))
        worker = [trainer.run_epoch() for _ in range(config["epochs"])]
        config.pop("latency_reps")
        nas.export(g, "python", folder / "net.py", with_train=True, preprocessing=data.preprocessing, task=task,
                   train_config=config)
        out = run(folder, "--init-weights", str(folder / "init.pt"))
        assert "no branch to drop" not in out and (task != "segmentation" or drop_path_nodes(g)), out
        assert ("augmentation of training batches: crop:2,flip" in out) == (task == "contrastive"), out
        epochs = [line.split()[2:-2] for line in out.splitlines() if line.startswith("epoch ")]
        assert len(epochs) == len(worker), out
        for words, metrics in zip(epochs, worker, strict=True):
            printed = dict(zip(words[::2], map(float, words[1::2]), strict=True))
            assert set(printed) == {k for k in metrics if k.startswith(("train_", "val_")) and k != "train_seconds"}
            for k, v in printed.items():
                assert v == pytest.approx(metrics[k], abs=1e-3), (task, k, out)
        if task == "segmentation":
            with pytest.raises(SystemExit, match="--augment crop:2 would move the pixels of the images but not their "
                                                 "segmentation targets"):
                run(folder, "--augment", "crop:2")


# every strategy on every task: the pair run through Ray below is not repeated here; candidates really trained
RAY = ("contrastive", "random")
IN_PROCESS = [(t, s) for t in sorted(TASKS) for s in ("random", "evolution", "combo") if (t, s) != RAY]
STRATEGY_OPTIONS = {"random": {}, "evolution": {"population_size": 2, "sample_size": 2},
                    "combo": {"n_initial": 2, "fit": "map"}}


@pytest.mark.parametrize("task,strategy", IN_PROCESS)
def test_strategy_searches_the_task_s_space_on_its_metric(task, strategy, cache):
    data = _data(task, cache)
    space = get_space(TASKS[task][1])
    s = make_strategy(strategy, space, seed=0, **STRATEGY_OPTIONS[strategy])
    values, budget = [], 3 if strategy == "combo" else 2  # COMBO's third proposal comes from its GP of two
    while len(values) < budget:
        a = s.ask()
        try:
            _graph(task, data, a)
        except SpaceError as e:  # as the driver does: an assignment that does not build is rejected, no budget used
            s.reject(a, str(e))
            continue
        _, metrics = _train(task, data, a)
        values.append(metrics[OBJECTIVE[task]])
        s.tell(a, values[-1])
    assert s.n_told == budget and all(0.0 <= v <= 1.0 for v in values)


# -- through Ray -------------------------------------------------------------------------------------------------

pytest.importorskip("ray")


def test_nas_search_ranks_by_the_task_s_metric(cluster, tmp_path, monkeypatch, capsys, cache):
    """Siamese pairs searched through real Ray (one search: a Ray search costs 30-50 s on this shared machine; the
    other strategy x task pairs are driven in process above): trials rank by val_auc, report the tracking success
    rate, and the leaderboard and the summary name the metric."""
    task, strategy = RAY
    original = builtins.print  # some Ray modules replace builtins.print; the search must not pickle it
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: original(*args, **kwargs))
    name, space, options = TASKS[task]
    out = tmp_path / "run"
    budget = 2
    argv = ["search", "--space", space, "--strategy", strategy, "--budget", str(budget), "--dataset", name,
            "--data-cache", cache, "--epochs", "1", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.01",
            "--seed", "0", "--workers", "1", "--max-params", "300000", "--out", str(out), "--latency-reps", "0"]
    for k, v in options.items():
        argv += ["--space-option", f"{k}={v}"]
    assert main(argv) == 0
    metric = OBJECTIVE[task]
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == budget and ok, rows
    for r in ok:
        assert r["value"] == r["metrics"][metric] and 0.0 <= r["value"] <= 1.0
        assert "test_auc" in r["metrics"] and "val_accuracy" not in r["metrics"]
        assert 0.0 <= r["metrics"]["test_success_rate"] <= 1.0
    best = max(ok, key=lambda r: r["value"])
    assert f"best: {metric} {best['value']:.6g}" in capsys.readouterr().out
    board = (out / "leaderboard.md").read_text()
    assert f"# Leaderboard ({metric}, max" in board and "| test_auc |" in board
    g = nas.load_architecture(out / "best.json")
    assert g.graph["space"] == space

