"""The GPU check (run by benchmarks/gpu_check.sh): what a first GPU machine must show, in at most 8 minutes on
one GPU, written to results/gpu_check.txt. Nothing here downloads: the data are CIFAR-sized (3x32x32, 10
classes) synthetic images with a learnable class signal, written as an npy data set (`--dataset npy`).

1. a CIFAR-sized candidate (resnet20_cifar) trained for a fixed time with AMP on and off through the worker's
   Trainer, against a plain hand-written loop (the same model and batches, AMP as the worker picks it): samples
   per second, accuracy, and the ratio Trainer / plain loop;
2. a search with 4 trials at 0.25 GPU each while a CPU-only search runs beside it: no process of the CPU search
   may appear in nvidia-smi (its workers are marked by an environment variable nvidia-smi's pids are checked for);
3. DARTS first and second order (one search epoch each on a small supernet);
4. an induced CUDA out-of-memory (a candidate allocating more than the GPU holds) recorded as "oom" while the
   search goes on;
5. DDP over 2 GPUs (`nas train --workers 2 --gpus`) where there are 2, and the DARTS supernet on 2 GPUs
   (`--gpus-per-trial 2`, first and second order, one search epoch; not in a dry run: it needs GPUs).

``--dry-run`` runs every step on the CPU at toy sizes (trials at 0 GPUs, DDP on 2 CPU workers with gloo, no
nvidia-smi) to show the script works end to end; its output goes to ``--out`` (default a temporary file), never
to results/. Usage: bash benchmarks/gpu_check.sh [--dry-run] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK = "GRAPHNAS_GPU_CHECK_CPU_SEARCH"


class Report:
    def __init__(self, path: Path):
        self.path, self.lines = path, []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")


def synthetic_cifar(folder: Path, n: int, side: int = 32, seed: int = 0) -> Path:
    """n uint8 images 3 x side x side in 10 classes: a per-class low-frequency template plus noise (learnable)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    templates = rng.normal(0, 1, (10, 3, 4, 4)).repeat(side // 4, axis=2).repeat(side // 4, axis=3)
    y = rng.integers(0, 10, n)
    x = np.clip(128 + 40 * templates[y] + rng.normal(0, 60, (n, 3, side, side)), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x_train.npy", x)
    np.save(folder / "y_train.npy", y.astype(np.int64))
    return folder


def candidate(dry: bool, shape: tuple[int, ...]):
    """resnet20_cifar; in a dry run a two-conv net (the CPU would spend minutes on resnet20)."""
    import nas

    if not dry:
        return nas.get_space("resnet").graph(preset="resnet20_cifar", num_classes=10, input_shape=shape)
    g = nas.ArchGraph(shape)
    x = g.add_op("conv0", "conv", "input", out_channels=8, kernel_size=3)
    x = g.add_op("bn0", "bn", x)
    x = g.add_op("relu0", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def amp_vs_plain(report: Report, data_root: Path, seconds: float, device: str, dry: bool) -> None:
    import torch
    import torch.nn.functional as F

    import nas
    from nas.train_settings import TrainSettings
    from workers.data import load_dataset
    from workers.training import Trainer, evaluate

    data = load_dataset("npy", root=str(data_root))
    g = candidate(dry, tuple(data.input_shape))
    report(f"## 1. {'a two-conv net' if dry else 'resnet20_cifar'} ({nas.count_params(g):,} params), input "
           f"{list(data.input_shape)}, batch 128, {seconds:g} s each, {device}")
    for amp in (False, True):
        torch.manual_seed(0)
        s = TrainSettings(dataset="npy", epochs=1000, batch_size=128, amp=amp, max_seconds=seconds,
                          latency_reps=0, schedule="constant", lr=0.05)
        t = Trainer(nas.build(g), data, s, device)
        while not t.done:
            m = t.run_epoch()
        ours = m["steps"] * t.batch_size / m["train_seconds"]
        # the plain loop: same model, batches and AMP type, nothing else
        torch.manual_seed(0)
        model = nas.build(g).to(device)
        if device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and t.amp_dtype == torch.float16)
        x_all, y_all = data.x_train.to(device), data.y_train.to(device)  # standardised once, on the device
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            idx = torch.randint(0, len(y_all), (128,), device=y_all.device)
            xb = x_all[idx]
            if device.startswith("cuda"):
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(torch.device(device).type, dtype=t.amp_dtype, enabled=amp):
                loss = F.cross_entropy(model(xb), y_all[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        plain = steps * 128 / (time.perf_counter() - start)
        acc = evaluate(model, data.x_val.to(device), data.y_val.to(device), amp=amp)["accuracy"]
        report(f"AMP {'on (' + str(t.amp_dtype).replace('torch.', '') + ')' if amp else 'off':<16} Trainer "
               f"{ours:8.0f} samples/s, val_accuracy {m['val_accuracy']:.4f} | plain loop {plain:8.0f} samples/s, "
               f"val_accuracy {acc:.4f} | ratio {ours / plain:.3f}")


def search(args: list[str], env: dict | None = None) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=400)
    return out.returncode, out.stdout + out.stderr


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines()]


def shared_gpu(report: Report, data_root: Path, tmp: Path, dry: bool) -> None:
    gpus = "0" if dry else "0.25"
    report(f"## 2. 4 trials at {gpus} GPU each, a CPU-only search beside them")
    env = {**os.environ, MARK: "1"}
    seen: set[int] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() and not dry:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            seen.update(int(p) for p in out.stdout.split() if p.strip().isdigit())
            for pid in list(seen):
                try:
                    if f"{MARK}=1".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                        cpu_pids.add(pid)
                except OSError:
                    pass
            time.sleep(0.5)

    cpu_pids: set[int] = set()
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    space = ["--space", "nb201", "--space-option", "C=4", "--space-option", "N=1"] if dry else [
        "--space", "resnet", "--max-params", "300000"]
    common = ["search", *space, "--strategy", "random", "--dataset", "npy", "--data-root", str(data_root),
              "--epochs", "1"]
    cpu = subprocess.Popen([sys.executable, "-m", "nas.cli", *common, "--budget", "2", "--out", str(tmp / "cpu"),
                            "--gpus-per-trial", "0", "--seed", "5"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    rc, text = search([*common, "--budget", "8", "--workers", "4", "--gpus-per-trial", gpus, "--cpus-per-trial",
                       "1", "--out", str(tmp / "shared")])
    cpu.wait(timeout=400)
    stop.set()
    watcher.join(timeout=5)
    recs = records(tmp / "shared")
    devices = sorted({r["metrics"].get("device", "?") for r in recs})
    report(f"GPU search rc {rc}: {sum(r['status'] == 'ok' for r in recs)}/{len(recs)} ok, devices {devices}, "
           f"latency_ms {[round(r['metrics'].get('latency_ms', 0), 2) for r in recs]}")
    cpu_recs = records(tmp / "cpu") if (tmp / "cpu" / "evaluations.jsonl").exists() else []
    report(f"CPU search: {len(cpu_recs)} trials, devices {sorted({r['metrics'].get('device', '?') for r in cpu_recs})}"
           f"; nvidia-smi saw {len(seen)} process(es), of them from the CPU search: {len(cpu_pids)} "
           f"({'PASS' if not cpu_pids else 'FAIL'})" + (" (dry run: no nvidia-smi)" if dry else ""))


def darts(report: Report, data_root: Path, tmp: Path, dry: bool) -> None:
    c, layers = (4, 3) if dry else (8, 5)
    report(f"## 3. DARTS first and second order (1 search epoch, darts space C={c} layers={layers})")
    for order in (1, 2):
        rc, text = search(["search", "--space", "darts", "--strategy", "darts", "--dataset", "npy", "--data-root",
                           str(data_root), "--strategy-option", "epochs=1", "--strategy-option", f"order={order}",
                           "--space-option", f"C={c}", "--space-option", f"layers={layers}", "--epochs", "1",
                           "--gpus-per-trial", "0" if dry else "1", "--out", str(tmp / f"darts{order}")])
        lines = [line for line in text.splitlines() if line.startswith("[darts]")]
        report(f"order {order}: rc {rc}; {lines[-1] if lines else text.strip().splitlines()[-1][:200]}")


def oom(report: Report, tmp: Path, dry: bool) -> None:
    report("## 4. an induced out-of-memory during a search")
    import ray

    import nas
    from nas.config import SearchConfig
    from nas.evaluation import DataInfo, Evaluation
    from nas.registry import register_space
    from nas.results import RunFolder
    from nas.search import SearchState, restore_strategy, run_trials
    from nas.strategies import make_strategy

    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=3)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    space = nas.SearchSpace("oom_widths", [nas.Categorical("width", (4, 8, 16))], build)
    register_space("oom_widths", lambda: space)

    class Greedy(Evaluation):
        def data_info(self):
            return DataInfo((1, 8, 8), 10)

        def trial_config(self, p):
            return {"width": p.assignment["width"], "dry": dry}

        def trainable(self):
            return greedy_trial

    cfg = SearchConfig(space="oom_widths", strategy="random", budget=3, out=str(tmp / "oom"),
                       gpus_per_trial=0 if dry else 0.5, max_failures=0)
    strategy = make_strategy("random", space, seed=0)
    folder = RunFolder(cfg.out)
    state = SearchState(cfg, space, strategy, folder, Greedy(cfg), log=lambda s: None)
    restore_strategy(strategy, folder, state.records)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        run_trials(state)
    finally:
        ray.shutdown()
    report("; ".join(f"width {r['assignment']['width']}: {r['status']}"
                     + (f" ({r['error'][:90]})" if r.get("error") else "") for r in state.records))


def greedy_trial(config: dict) -> None:
    from workers.trainable import run_trial

    def body(config, progress, tune):
        import torch

        if config["width"] == 16:  # more than the GPU holds: a real CUDA out-of-memory (a fake one in a dry run)
            if config["dry"]:
                raise torch.OutOfMemoryError("CUDA out of memory (dry run: raised, not allocated)")
            total = torch.cuda.get_device_properties(0).total_memory
            torch.empty(int(total * 1.5), dtype=torch.uint8, device="cuda")
        tune.report({"status": "ok", "val_accuracy": config["width"] / 100, "epoch": 1})

    run_trial(body, config, {"val_accuracy": float("nan")})


def ddp(report: Report, data_root: Path, tmp: Path, dry: bool) -> None:
    import torch

    n = torch.cuda.device_count() if not dry else 2
    report("## 5. DDP over 2 GPUs (nas train --workers 2 --gpus)" if not dry else "## 5. DDP, 2 CPU workers (gloo)")
    if n < 2:
        report(f"skipped: {n} GPU(s) on this machine")
        return
    arch = tmp / "net.json"
    import nas

    arch.write_text(nas.to_json(candidate(dry, (1, 8, 8))))
    for workers in (1, 2):
        start = time.perf_counter()
        rc, text = search(["train", str(arch), "--out", str(tmp / f"ddp{workers}"), "--workers", str(workers),
                           "--epochs", "2", "--batch-size", "128", *([] if dry else ["--gpus"])])
        m = json.loads((tmp / f"ddp{workers}" / "metrics.json").read_text()) if rc == 0 else {}
        report(f"{workers} worker(s): rc {rc}, {time.perf_counter() - start:.1f} s, train_loss "
               f"{m.get('train_loss', float('nan')):.4f}, val_accuracy {m.get('val_accuracy', float('nan')):.4f}"
               + ("" if rc == 0 else f" | {text.strip().splitlines()[-1][:200]}"))
    if dry:
        return
    for order in (1, 2):  # the supernet data-parallel: each GPU a slice of every batch, gradients all-reduced
        start = time.perf_counter()
        rc, text = search(["search", "--space", "darts", "--strategy", "darts", "--dataset", "npy", "--data-root",
                           str(data_root), "--strategy-option", "epochs=1", "--strategy-option", f"order={order}",
                           "--space-option", "C=8", "--space-option", "layers=5", "--epochs", "1",
                           "--gpus-per-trial", "2", "--out", str(tmp / f"darts_ddp{order}")])
        lines = [line for line in text.splitlines() if line.startswith("[darts]")]
        report(f"DARTS order {order} on 2 GPUs: rc {rc}, {time.perf_counter() - start:.1f} s; "
               f"{lines[-1] if lines else text.strip().splitlines()[-1][:200]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes (not a GPU figure)")
    p.add_argument("--out", help="report file (default: results/gpu_check.txt; a temporary file with --dry-run)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device; use --dry-run to check the script on the CPU")
    out = Path(args.out) if args.out else (Path(tempfile.mkstemp(prefix="gpu_check_dry_", suffix=".txt")[1]) if dry
                                           else ROOT / "results" / "gpu_check.txt")
    report = Report(out)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    start = time.perf_counter()
    report(f"# gpu_check{' DRY RUN on the CPU: no GPU figure' if dry else ''}; torch {torch.__version__}")
    if not dry:
        props = torch.cuda.get_device_properties(0)
        report(f"# {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB, compute "
               f"capability {props.major}.{props.minor}")
    data_root = synthetic_cifar(tmp / "cifar_like", 600 if dry else 20000, side=16 if dry else 32)
    steps = [("amp", lambda: amp_vs_plain(report, data_root, 3 if dry else 30, "cpu" if dry else "cuda", dry)),
             ("shared", lambda: shared_gpu(report, data_root, tmp, dry)),
             ("darts", lambda: darts(report, data_root, tmp, dry)),
             ("oom", lambda: oom(report, tmp, dry)),
             ("ddp", lambda: ddp(report, data_root, tmp, dry))]
    for name, step in steps:
        t = time.perf_counter()
        try:
            step()
        except Exception as e:  # one step failing does not hide the others
            report(f"step {name} FAILED: {type(e).__name__}: {e}")
        report(f"({name}: {time.perf_counter() - t:.0f} s)")
        report()
    report(f"# total {time.perf_counter() - start:.0f} s")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
