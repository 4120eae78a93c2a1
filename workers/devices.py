"""Which devices a trial trains on, in which precision, and what a CUDA failure means for it.

- **Devices** (`trial_devices`): inside Ray, exactly the GPUs Ray assigned this worker (``ray.get_gpu_ids()``),
  and none when it was given none. Ray 2.60 no longer hides the GPUs from a task or actor given ``num_gpus=0``
  (it leaves ``CUDA_VISIBLE_DEVICES`` alone, see ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO``), so without this a CPU
  trial would see every GPU of its node and train on ``cuda:0`` outside Ray's accounting. A worker given no
  GPU hides them itself (``CUDA_VISIBLE_DEVICES=""``, before CUDA is first touched in the process); a worker
  given GPUs that torch cannot see (a CPU build of torch) is an error naming them. Outside Ray: CUDA where
  torch has it, else the CPU.
- **AMP** (`amp_dtype`): bfloat16 only where the GPU computes it natively (compute capability >= 8.0: Ampere
  and later; ``torch.cuda.is_bf16_supported()`` also says yes where it is emulated, slowly, on older GPUs),
  float16 with a GradScaler elsewhere; on the CPU bfloat16 (autocast's CPU type).
- **cuDNN** (`configure_backends`): ``cudnn.benchmark`` on (the fastest kernels for each shape, chosen by
  timing, so two runs may pick different ones), or with ``deterministic`` the deterministic flags
  (``cudnn.deterministic``, ``torch.use_deterministic_algorithms`` in warn-only mode, ``CUBLAS_WORKSPACE_CONFIG``).
- **Latency alone** (`DeviceLease`): trials sharing a GPU (fractional GPUs) hold a node-local lease shared
  while they train an epoch; a latency measurement holds it exclusively, so it is never timed while another
  trial trains on that GPU.
- **Failures** (`failure_kind`): a CUDA (or host allocator) out-of-memory error is ``"oom"``, not the
  architecture's fault as such (the driver retries it once alone before the strategy hears of it); any other
  CUDA error is ``"cuda"``: sticky (an illegal memory access or a device-side assert leaves the process's CUDA
  context unusable), so the worker process must end and the next trial gets a fresh one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["CUDA", "OOM", "DeviceError", "DeviceLease", "TrialDevices", "amp_dtype", "amp_dtype_for",
           "assigned_gpu_ids", "configure_backends", "device_name", "failure_kind", "seed_torch", "trial_devices"]

OOM, CUDA = "oom", "cuda"  # failure kinds

# substrings of the messages of CUDA failures that leave the context unusable ("sticky" errors); any CUDA
# error counts as one (`failure_kind`), these are named so that a wrapped error is recognised by its text
_CUDA_ERROR_TEXT = ("CUDA error", "illegal memory access", "device-side assert", "unspecified launch failure",
                    "misaligned address", "illegal instruction", "uncorrectable ECC", "CUBLAS_STATUS_EXECUTION_FAILED",
                    "CUDNN_STATUS_EXECUTION_FAILED", "cudaErrorLaunchFailure")
_OOM_TEXT = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
             "DefaultCPUAllocator: can't allocate memory", "CUDA error: out of memory")


class DeviceError(RuntimeError):
    """The devices Ray assigned cannot be used by this process (e.g. GPUs with a CPU build of torch)."""


@dataclass(frozen=True)
class TrialDevices:
    """The devices of one trial: ``device`` is where it trains (``cuda:k`` for the first GPU Ray gave it, or
    the CPU); ``gpu_ids`` are Ray's ids of the GPUs it was given (empty: none)."""

    device: torch.device
    gpu_ids: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.device.type != "cuda":
            return "cpu"
        ids = ",".join(self.gpu_ids)
        return f"{self.device} ({device_name(self.device)}{f'; Ray GPU id {ids}' if ids else ''})"


def assigned_gpu_ids() -> list[str] | None:
    """Ray's ids of the GPUs assigned to this worker process, or None outside a Ray worker (a driver with Ray
    initialised too: it holds no GPUs of Ray's, and hiding them there would hide them from the driver's own
    in-process training and from any Ray node it starts later in the same process)."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return None
        return [str(i) for i in ray.get_gpu_ids()]
    except Exception:  # a driver process, or Ray not installed
        return None


def trial_devices(gpu_ids: list[str] | None = None, *, environ: dict[str, str] | None = None) -> TrialDevices:
    """The devices this process trains on: with `gpu_ids` (default: `assigned_gpu_ids()`) an empty list hides
    every GPU (``CUDA_VISIBLE_DEVICES=""`` in `environ`, default ``os.environ``, while CUDA is not yet initialised
    in this process) and returns the CPU; GPU ids give the first of them as ``cuda:k``, ``k`` its position among
    the visible devices (Ray normally makes exactly the assigned ones visible, so ``k`` is 0). Outside Ray
    (`gpu_ids` None): ``cuda`` where torch has CUDA, else the CPU."""
    env = os.environ if environ is None else environ
    ids = assigned_gpu_ids() if gpu_ids is None else [str(i) for i in gpu_ids]
    if ids is None:
        return TrialDevices(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if not ids:
        if not torch.cuda.is_initialized():
            env["CUDA_VISIBLE_DEVICES"] = ""  # torch reads it when CUDA is first touched: it then sees no GPU
        return TrialDevices(torch.device("cpu"))
    if not torch.cuda.is_available():
        raise DeviceError(f"Ray assigned GPU(s) {', '.join(ids)} to this trial but torch {torch.__version__} sees no "
                          "CUDA device (a CPU build of torch? install the CUDA build of the same version on every "
                          "GPU node)")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    order = [v.strip() for v in visible.split(",")] if visible else None
    index = order.index(ids[0]) if order is not None and ids[0] in order else (0 if order else int(ids[0]))
    if index >= torch.cuda.device_count():
        raise DeviceError(f"Ray assigned GPU {ids[0]} but torch sees {torch.cuda.device_count()} device(s) "
                          f"(CUDA_VISIBLE_DEVICES={visible!r})")
    return TrialDevices(torch.device("cuda", index), tuple(ids))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} thread(s)"


def amp_dtype_for(capability: tuple[int, int] | None) -> torch.dtype:
    """The autocast type for a CUDA device of compute `capability` (None: the CPU): bfloat16 where it is native
    (8.0 and above), else float16 (which needs a GradScaler)."""
    if capability is None:
        return torch.bfloat16
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """`amp_dtype_for` the compute capability of `device`."""
    device = torch.device(device)
    return amp_dtype_for(torch.cuda.get_device_capability(device) if device.type == "cuda" else None)


def seed_torch(seed: int) -> None:
    """``torch.manual_seed(seed)`` for a process that trains on the CPU or on CUDA: the CPU generator, and CUDA's
    where CUDA is initialised (call it after the model is on its device). ``torch.manual_seed`` also queues a
    seeding of every accelerator not yet initialised (CUDA, XPU, MTIA), formatting a stack trace for each on every
    call: about 1 ms a call, 5 ms on a loaded Ray worker, and a queue that grows by three entries per call on a
    reused actor that never touches CUDA."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def configure_backends(deterministic: bool = False) -> None:
    """Set this process's cuDNN / algorithm flags for a trial (process-wide, so set again by every trial of a
    reused worker). Default: ``cudnn.benchmark`` on. ``deterministic``: cuDNN's deterministic kernels, no
    benchmarking, ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op without a deterministic
    implementation warns and stays nondeterministic rather than failing the candidate) and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (read when cuBLAS starts in the process: before its first matmul)."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)


def failure_kind(exc: BaseException) -> str | None:
    """``"oom"`` for an out-of-memory error (CUDA's, or the host allocator's), ``"cuda"`` for any other CUDA
    error (sticky: the process's CUDA context is unusable afterwards), None for anything else."""
    if isinstance(exc, torch.OutOfMemoryError):
        return OOM
    text = str(exc)
    if any(t in text for t in _OOM_TEXT):
        return OOM
    if isinstance(exc, torch.AcceleratorError) or any(t in text for t in _CUDA_ERROR_TEXT):
        return CUDA
    return None


# ---------------------------------------------------------------------------------------------------
# a GPU shared by several trials (fractional --gpus-per-trial): latency is measured while none of the others
# trains on it


class DeviceLease:
    """Node-local reader-writer lock of one GPU (files under ``lock_dir``, ``flock``), so that a trial measures
    latency alone on the device: every trial holds it shared while it trains an epoch (`training`), a latency
    measurement holds it exclusively (`alone`). A turnstile file gives the measurement priority: once it waits,
    no trial starts another epoch on the device, and it gets the device when the epochs running end. A trial on
    the CPU (or a whole GPU of its own) has nothing to share: `for_devices` gives None there."""

    def __init__(self, key: str, lock_dir: str | os.PathLike | None = None):
        import tempfile
        from pathlib import Path

        folder = Path(lock_dir or Path(tempfile.gettempdir()) / "graphnas-device-locks")
        folder.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.lock_path, self.gate_path = folder / f"{key}.lock", folder / f"{key}.gate"

    @classmethod
    def for_devices(cls, devices: TrialDevices, share: float) -> DeviceLease | None:
        """The lease of the trial's GPU where it has a fraction of it (`share` < 1), else None."""
        if devices.device.type != "cuda" or not devices.gpu_ids or share >= 1:
            return None
        return cls(f"gpu-{devices.gpu_ids[0]}")

    def _locked(self, path, mode: int):
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def held():
            with open(path, "a+") as f:
                fcntl.flock(f, mode)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

        return held()

    def training(self):
        """Shared, for one epoch of training: waits while a measurement waits or runs."""
        import contextlib
        import fcntl

        stack = contextlib.ExitStack()
        with self._locked(self.gate_path, fcntl.LOCK_EX):  # pass the turnstile
            pass
        stack.enter_context(self._locked(self.lock_path, fcntl.LOCK_SH))
        return stack

    def alone(self):
        """Exclusive, for a latency measurement: no other trial trains on the device meanwhile."""
        import contextlib
        import fcntl

        stack = contextlib.ExitStack()
        stack.enter_context(self._locked(self.gate_path, fcntl.LOCK_EX))  # hold the turnstile: no new epochs
        stack.enter_context(self._locked(self.lock_path, fcntl.LOCK_EX))
        return stack
