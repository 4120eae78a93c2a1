"""Device, precision and failure rules of a trial (`workers.devices`), as plain functions. This machine has no GPU:
where a rule depends on what CUDA reports, torch's answer is patched (never Ray's or the training's)."""

from __future__ import annotations

import pytest
import torch

from workers import devices, training
from workers.devices import CUDA, OOM, DeviceError, amp_dtype, amp_dtype_for, configure_backends, failure_kind


@pytest.fixture
def cuda_machine(monkeypatch):
    """torch answers as on a machine with two CUDA devices of compute capability 7.0 (V100) that says bf16 is
    supported (it is, emulated)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))


def test_a_ray_worker_given_no_gpu_trains_on_the_cpu_and_hides_the_gpus(cuda_machine, monkeypatch):
    # Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for num_gpus=0; the old default_device() then chose cuda
    monkeypatch.setattr(devices, "assigned_gpu_ids", lambda: [])
    env: dict[str, str] = {}
    assert devices.trial_devices(environ=env).device == torch.device("cpu") and env["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert training.default_device() == torch.device("cpu")


def test_a_ray_worker_given_gpus_trains_on_the_first_of_them(cuda_machine, monkeypatch):
    got = devices.trial_devices(["3"], environ={"CUDA_VISIBLE_DEVICES": "3"})  # as Ray sets it: only GPU 3
    assert got.device == torch.device("cuda", 0) and got.gpu_ids == ("3",)
    got = devices.trial_devices(["1"], environ={"CUDA_VISIBLE_DEVICES": "0,1"})  # Ray told not to set it
    assert got.device == torch.device("cuda", 1)
    assert devices.trial_devices(["1"], environ={}).device == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="GPU 5 but torch sees 2"):
        devices.trial_devices(["5"], environ={})


def test_gpus_assigned_to_a_process_without_cuda_are_an_error_naming_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"GPU\(s\) 0, 1 .* sees no CUDA device"):
        devices.trial_devices(["0", "1"], environ={})
    assert devices.trial_devices(None).device == torch.device("cpu")  # outside Ray: what torch has


def test_bf16_only_where_the_gpu_has_it_natively(cuda_machine, monkeypatch):
    # is_bf16_supported() says yes on this (patched) V100, where bf16 is emulated: fp16 with a GradScaler instead
    assert amp_dtype("cuda:0") == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert amp_dtype("cuda:0") == torch.bfloat16
    assert [amp_dtype_for(c) for c in [(6, 1), (7, 5), (8, 6), (9, 0), None]] == [
        torch.float16, torch.float16, torch.bfloat16, torch.bfloat16, torch.bfloat16]


def test_cudnn_benchmark_by_default_and_deterministic_flags_on_request(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_backends(deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        configure_backends(deterministic=False)  # the next trial of a reused worker
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        configure_backends(False)


def test_out_of_memory_and_sticky_cuda_errors_are_told_apart():
    assert failure_kind(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == OOM
    assert failure_kind(RuntimeError("CUDA error: out of memory")) == OOM
    assert failure_kind(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                     "memory: you tried to allocate 10 bytes")) == OOM
    assert failure_kind(torch.AcceleratorError("CUDA error: an illegal memory access was encountered")) == CUDA
    assert failure_kind(RuntimeError("CUDA error: device-side assert triggered")) == CUDA
    assert failure_kind(RuntimeError("CUDNN_STATUS_EXECUTION_FAILED")) == CUDA
    assert failure_kind(ValueError("shape mismatch")) is None
    assert failure_kind(RuntimeError("NaN loss at epoch 1 step 3")) is None


def _train_epochs(lock_dir: str, log: str, n: int) -> None:
    import time

    lease = devices.DeviceLease("gpu-0", lock_dir)
    for _ in range(n):
        with lease.training():
            start = time.monotonic()
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(f"{start} {time.monotonic()}\n")


def test_latency_is_measured_while_no_trial_sharing_the_gpu_trains(tmp_path):
    """Two processes train "epochs" on one GPU's lease (shared: they overlap); a measurement in this process takes
    it alone: no epoch of theirs overlaps it, and both go on after it."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    logs = [str(tmp_path / f"t{i}.log") for i in range(2)]
    trainers = [ctx.Process(target=_train_epochs, args=(str(tmp_path), log, 40)) for log in logs]
    for p in trainers:
        p.start()
    lease = devices.DeviceLease("gpu-0", tmp_path)
    time.sleep(0.3)
    with lease.alone():
        alone = (time.monotonic(), time.monotonic() + 0.15)
        time.sleep(0.15)
    for p in trainers:
        p.join(timeout=30)
    epochs = [[tuple(map(float, line.split())) for line in open(log)] for log in logs]
    assert all(len(e) == 40 for e in epochs)
    every = [e for per in epochs for e in per]
    assert not [e for e in every if e[0] < alone[1] and e[1] > alone[0]], alone  # nothing trained meanwhile
    assert any(e[0] >= alone[1] for e in every) and any(e[1] <= alone[0] for e in every)
    a, b = epochs
    assert any(x[0] < y[1] and x[1] > y[0] for x in a for y in b)  # trainers share the device with each other


def test_only_a_shared_gpu_has_a_lease():
    cpu, gpu = devices.TrialDevices(torch.device("cpu")), devices.TrialDevices(torch.device("cuda", 0), ("3",))
    assert devices.DeviceLease.for_devices(cpu, 0.0) is None and devices.DeviceLease.for_devices(gpu, 1.0) is None
    assert devices.DeviceLease.for_devices(gpu, 0.25).key == "gpu-3"
