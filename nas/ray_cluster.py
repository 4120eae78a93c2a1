"""The Ray side of a search: which cluster it runs on (a private local instance, or one joined by address), whether
that cluster can ever give a trial its resources, how many trials run at once, and a clean end however the driver
is stopped (SIGINT / SIGTERM, an error): the connection this module made is shut down, one it found is kept.

`nas.search` (the driver) calls these; nothing here knows of strategies, evaluations or run folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


class SearchError(RuntimeError):
    """The search cannot start or continue; the message says why and what to do."""



class SignalReceived(KeyboardInterrupt):
    """Raised by `raise_on_signal`: a signal that stops the driver at once (SIGTERM, or a second Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_on_signal(signum: int, frame: Any) -> None:
    """A signal handler: stop where the driver is, as Ctrl-C does (finally blocks run, Ray is shut down)."""
    raise SignalReceived(signum)


_RAY = {"owned": False, "held": 0}  # whether this module connected (owns the connection) / ray_session depth


class _RaySession:
    def __enter__(self) -> None:
        _RAY["held"] += 1

    def __exit__(self, *exc: Any) -> None:
        _RAY["held"] -= 1
        release_ray()


def ray_session() -> _RaySession:
    """``with ray_session():`` keeps a Ray instance this module starts alive across the searches run inside
    (DARTS' plan runs two) and shuts it down when the block ends, however it ends. Without it each
    `run_trials` shuts down what it started."""
    return _RaySession()


def release_ray() -> None:
    """Shut down the Ray connection `connect_ray` made (a private local instance with all its processes, or
    the driver's connection to a cluster) unless a `ray_session` holds it; a connection made by someone
    else (a test, a notebook) is left alone."""
    if not _RAY["owned"] or _RAY["held"] > 0:
        return
    _RAY["owned"] = False
    import ray

    ray.shutdown()  # also after a start that failed half-way; a no-op where nothing was started


def connect_ray(address: str | None) -> str:
    """Connect this process to Ray and return a line saying where the search runs.

    - Already connected (tests, a notebook, a search before this one): that connection is kept and is
      never shut down here.
    - `address` None or "local": a private Ray instance on this machine, started for this search and shut
      down when it ends (`release_ray`). It never joins a cluster found on the machine (the one ``ray
      start`` recorded, or ``RAY_ADDRESS``).
    - "auto" or HOST:PORT (or ray://HOST:PORT): that cluster, checked to answer within seconds first, so
      an unreachable address is a `SearchError` naming it rather than Ray's minutes of retries."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return f"ray: this process's connection to {_gcs_address()}: {nodes_summary(cluster_nodes())}"
    _RAY["owned"] = True  # from here on, even a half-done start is shut down by `release_ray`
    if address in (None, "", "local"):
        _ray_init(ray, "local")
        env = os.environ.get("RAY_ADDRESS")
        note = f"; RAY_ADDRESS={env} is not used without --address (--address auto joins it)" if env else ""
        return (f"ray: private local instance on this machine ({nodes_summary(cluster_nodes())}), shut down when "
                f"the search ends{note}")
    target = reachable_address(address)  # a SearchError (a RuntimeError) of its own, within seconds
    try:
        _ray_init(ray, address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SearchError(f"--address {address}: could not join the Ray cluster at {target} ({e}); start one "
                          "with `ray start --head`, or leave out --address to run on a private local instance") \
            from None
    return f"ray: cluster at {target}: {nodes_summary(cluster_nodes())}"


def _ray_init(ray: Any, address: str) -> None:
    """`ray.init` keeping this process's own SIGTERM handler, where it has one (Ray installs a sys.exit)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        if main and callable(previous):
            signal.signal(signal.SIGTERM, previous)


def _gcs_address() -> str:
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return "a Ray cluster"


def reachable_address(address: str, timeout: float = 3.0) -> str:
    """The HOST:PORT that `address` ("auto", HOST:PORT, ray://HOST:PORT) leads to, once something there
    answered as a gRPC server (Ray's GCS or client server) within `timeout` seconds; else `SearchError`."""
    import socket

    env = os.environ.get("RAY_ADDRESS", "")
    if address.startswith("ray://") or (address == "auto" and env.startswith("ray://")):
        target = (address if address.startswith("ray://") else env)[len("ray://"):].rstrip("/")
    else:
        from ray._private import services

        try:
            target = services.canonicalize_bootstrap_address(address)
        except ConnectionError:  # "auto" found nothing
            raise SearchError(f"--address {address}: no Ray cluster was found on this machine (none started with "
                              "`ray start`, no RAY_ADDRESS); start one with `ray start --head`, give HOST:PORT, "
                              "or leave out --address to run on a private local instance") from None
        except ValueError as e:
            raise SearchError(f"--address {address}: not a Ray address ({e}); give auto or HOST:PORT") from None
        if target is None:
            raise SearchError(f"--address {address}: not a cluster address; give auto or HOST:PORT")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SearchError(f"--address {address}: not a Ray address; give auto or HOST:PORT")
    via = f" (resolved to {target})" if address == "auto" else ""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "", "false"):
                # an HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers with SETTINGS
                s.settimeout(timeout)
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                head = b""
                while len(head) < 9:
                    chunk = s.recv(9 - len(head))
                    if not chunk:
                        break
                    head += chunk
                if len(head) < 9 or head[3] != 0x04:
                    raise SearchError(f"--address {address}{via}: {target} answers, but not as a Ray cluster's "
                                      "head (give the port of `ray start --head --port=PORT`, 6379 by default)")
    except SearchError:
        raise
    except OSError as e:
        raise SearchError(f"--address {address}{via}: no Ray cluster answers at {target} within {timeout:g} s "
                          f"({e.strerror or e}); is its head running (`ray start --head`)? Leave out --address "
                          "to run on a private local instance") from None
    return target


def cluster_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected cluster: {"ip", "CPU", "GPU"}."""
    import ray

    return [{"ip": n.get("NodeManagerAddress", "?"), "CPU": float(n.get("Resources", {}).get("CPU", 0.0)),
             "GPU": float(n.get("Resources", {}).get("GPU", 0.0))} for n in ray.nodes() if n.get("Alive")]


def this_machine() -> list[dict[str, Any]]:
    """The node a private local instance would have, as Ray detects it (CPUs, GPUs), without starting
    Ray; [] where this Ray's internals differ (then the cluster is checked once started)."""
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
        return [{"ip": "this machine", "CPU": float(spec.num_cpus), "GPU": float(spec.num_gpus or 0)}]
    except Exception:
        return []


def nodes_summary(nodes: list[dict[str, Any]]) -> str:
    def one(n: dict[str, Any]) -> str:
        return f"{n['CPU']:g} CPUs, {n['GPU']:g} GPUs"

    if len(nodes) == 1:
        return f"1 node, {one(nodes[0])}"
    total = {"CPU": sum(n["CPU"] for n in nodes), "GPU": sum(n["GPU"] for n in nodes)}
    each = "; ".join(f"{n['ip']}: {one(n)}" for n in nodes)
    return f"{len(nodes)} nodes, {one(total)} ({each})"


DDP_TRIAL_CPUS = 0.01  # what a data-parallel trial asks for itself (it waits for its TorchTrainer's workers)


def _ddp_trials(cpus: float, gpus: float, nodes: list[dict[str, float]]) -> int:
    """Data-parallel trials (`gpus` workers of one GPU and `cpus` CPUs each, on any nodes) the nodes hold at once,
    each trial also holding `DDP_TRIAL_CPUS` CPU of its own while it waits for its workers."""
    slots = sum(min(int(n.get("GPU", 0.0) + 1e-9), int(n.get("CPU", 0.0) / cpus + 1e-9)) for n in nodes)
    trials = slots // int(gpus)
    while trials > 0:
        left = trials * int(gpus)
        spare = []  # CPUs left on each node once the trials' workers are placed
        for n in nodes:
            here = min(left, int(n.get("GPU", 0.0) + 1e-9), int(n.get("CPU", 0.0) / cpus + 1e-9))
            left -= here
            spare.append(n.get("CPU", 0.0) - here * cpus)
        if sum(int(s / DDP_TRIAL_CPUS + 1e-6) for s in spare) >= trials:
            return trials
        trials -= 1
    return 0


def check_resources(cpus: float, gpus: float, nodes: list[dict[str, Any]], what: str = "the Ray cluster") -> None:
    """Raise `SearchError` naming the resource when no node of `nodes` (`what`: the Ray cluster, this
    machine) can ever run a trial asking for `cpus` CPUs and `gpus` GPUs (a trial runs on one node; Ray
    gives fractions of one GPU only)."""
    where = nodes_summary(nodes) if nodes else "no alive nodes"
    if not nodes:
        raise SearchError(f"{what} has no alive Ray nodes")
    if gpus > 0 and not any(n["GPU"] > 0 for n in nodes):
        raise SearchError(f"--gpus-per-trial {gpus:g}: {what} has no GPUs ({where}); leave out "
                          "--gpus-per-trial to train on CPUs, or join a cluster with GPUs (--address)")
    if gpus > 1 and gpus != int(gpus):
        raise SearchError(f"--gpus-per-trial {gpus:g}: above 1 a trial must ask for whole GPUs (Ray shares "
                          "out fractions of one GPU only); give 1 or less, or a whole number")
    if gpus > 1:  # data-parallel: `gpus` workers of one GPU and `cpus` CPUs each, on any nodes
        slots = sum(min(int(n["GPU"] + 1e-9), int(n["CPU"] / cpus + 1e-9)) for n in nodes)
        if slots < gpus:
            raise SearchError(f"--gpus-per-trial {gpus:g}: the cluster has room for {slots} worker(s) of one GPU "
                              f"and {cpus:g} CPUs (--cpus-per-trial, per worker): {where}")
        if _ddp_trials(cpus, gpus, nodes) < 1:
            raise SearchError(f"--gpus-per-trial {gpus:g}: {gpus:g} workers of {cpus:g} CPUs (--cpus-per-trial, per "
                              f"worker) leave no {DDP_TRIAL_CPUS:g} CPU for the trial itself, which waits for them "
                              f"({where}); give a smaller --cpus-per-trial, e.g. {cpus - DDP_TRIAL_CPUS:g}")
        return
    most_gpus = max(n["GPU"] for n in nodes)
    if gpus > most_gpus + 1e-9:
        raise SearchError(f"--gpus-per-trial {gpus:g}: no node has {gpus:g} GPUs (the most on one node is "
                          f"{most_gpus:g}: {where}); a trial runs on one node")
    most_cpus = max(n["CPU"] for n in nodes)
    if cpus > most_cpus + 1e-9:
        raise SearchError(f"--cpus-per-trial {cpus:g}: no node has {cpus:g} CPUs (the most on one node is "
                          f"{most_cpus:g}: {where}); a trial runs on one node")
    if not any(n["CPU"] + 1e-9 >= cpus and n["GPU"] + 1e-9 >= gpus for n in nodes):
        raise SearchError(f"--cpus-per-trial {cpus:g} with --gpus-per-trial {gpus:g}: no node has both ({where}); "
                          "a trial runs on one node")


def trial_concurrency(cpus: float, gpus: float, nodes: list[dict[str, float]] | dict[str, float]) -> int:
    """Trials the cluster can run at once: on each node, over each resource a trial asks for, floor(node's
    amount / per trial), the least of them; summed over the nodes (a trial runs on one node, so two nodes of 3
    CPUs hold two 2-CPU trials, not three); at least 1. `nodes` is `cluster_nodes()`, or one dict of amounts
    ("CPU", "GPU") for a single node."""
    import math

    node_list = [nodes] if isinstance(nodes, dict) else nodes
    if gpus > 1:  # data-parallel trials: `gpus` workers of (one GPU, `cpus` CPUs) each, anywhere
        return max(1, _ddp_trials(cpus, gpus, node_list))

    def on(node: dict[str, float]) -> int:
        fits = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0]
        return min(fits) if fits else int(node.get("CPU", 1.0))

    return max(1, sum(on(n) for n in node_list))


class StopRequest:
    """The driver's stop request: the first SIGINT / SIGTERM while trials run records the signal (Tune is
    told by `stopper`, then ends the trials in flight without recording them); a second one stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.announced = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise SignalReceived(signum)
        self.signum = signum  # nothing else here: printing in a handler can collide with the main thread's

    def installed(self):
        import signal
        import threading

        stop = self

        class Installed:
            def __enter__(self) -> None:
                self.saved: dict[int, Any] = {}
                self.env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's own prints a Tuner.restore hint
                if threading.current_thread() is threading.main_thread():
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        self.saved[sig] = signal.getsignal(sig)
                        signal.signal(sig, stop.handle)

            def __exit__(self, *exc: Any) -> None:
                for sig, handler in self.saved.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
                if self.env is None:
                    os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
                else:
                    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.env

        return Installed()


def make_stopper(stop: StopRequest, log: Callable[[str], None]):
    from ray.tune import Stopper

    class StopOnSignal(Stopper):
        """Ends the experiment once the driver got SIGINT / SIGTERM (checked by Tune on every step)."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            if stop.signum is not None and not stop.announced:
                stop.announced = True
                import signal

                log(f"{signal.Signals(stop.signum).name} received: stopping the search; trials in flight are "
                    "not recorded (they run again on --resume)")
            return stop.signum is not None

    return StopOnSignal()
