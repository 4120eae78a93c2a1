"""The `nas` command line. Subcommands import what they need lazily so `nas spaces` starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


class CLIError(Exception):
    """A usage error; printed without a traceback."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``nas: error: ...`` (exit code 2); an epilog may be a function, called only
    when the help is printed (the strategies' options import the strategies)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"nas: error: {message} (see `{self.prog} --help`)\n")

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _strategy_options_epilog() -> str:
    """Each strategy's options (name, default, meaning), from its constructor's signature and docstring."""
    import textwrap

    from nas.strategies import PLANS, STRATEGIES, strategy_class

    lines = ["strategy options (--strategy-option KEY=VALUE; VALUE as JSON or a bare word):"]
    for name in STRATEGIES:
        for key, default, meaning in strategy_options(strategy_class(name)):
            lines += textwrap.wrap(f"{name}.{key} (default {json.dumps(default)}): {meaning}", 110,
                                   initial_indent="  ", subsequent_indent="      ")
        if not strategy_options(strategy_class(name)):
            lines.append(f"  {name}: no options")
    if "darts" in PLANS:
        import dataclasses

        from nas.darts.settings import DartsSettings

        defaults = ", ".join(f"{f.name}={_default_text(f)}" for f in dataclasses.fields(DartsSettings))
        lines.append("  darts: a supernet search, then the derived architecture retrained; its options and their "
                     f"defaults (meanings: {DartsSettings.__module__}):")
        lines += textwrap.wrap(defaults, 108, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _default_text(f: Any) -> str:
    from dataclasses import MISSING

    value = f.default if f.default is not MISSING else f.default_factory()
    return json.dumps(value)


def strategy_options(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, meaning) of each option of a strategy class: the keyword parameters of its
    ``__init__`` after space, seed and mode, each explained by a ``name: meaning`` line of that docstring."""
    import inspect

    meanings: dict[str, str] = {}
    current, indent = None, 0
    for line in (inspect.getdoc(cls.__init__) or "").splitlines()[1:]:
        depth = len(line) - len(line.lstrip())
        head, sep, rest = line.strip().partition(": ")
        if current and line.strip() and depth > indent:
            meanings[current] += " " + line.strip()
        elif sep and head.isidentifier():
            current, indent, meanings[head] = head, depth, rest.strip()
        else:
            current = None
    params = inspect.signature(cls.__init__).parameters.values()
    return [(p.name, p.default, meanings.get(p.name, "")) for p in params
            if p.name not in ("self", "space", "seed", "mode") and p.kind is p.POSITIONAL_OR_KEYWORD]


def cmd_repair(args: argparse.Namespace) -> int:
    """`nas search --out DIR --repair`: move the journal's lines that are not evaluation records aside."""
    from pathlib import Path

    from nas.config import SearchConfig
    from nas.results import EVALUATIONS, REJECTED, RunFolder

    args.out = args.out or SearchConfig.out  # the folder a search without --out writes
    journal = Path(args.out) / EVALUATIONS
    if not journal.is_file():
        raise CLIError(f"--repair: {journal} does not exist; there is no journal to repair")
    folder = RunFolder(args.out)
    moved = folder.repair()
    if not moved:
        print(f"{journal}: every line is an evaluation record; nothing to repair")
        return 0
    print(f"moved {len(moved)} line(s) of {journal} that are not evaluation records to {folder.path / REJECTED}:")
    for i, why, text in moved:
        print(f"  line {i}: {why}: {text[:100]}{'...' if len(text) > 100 else ''}")
    print(f"{len(folder.records())} evaluation records kept; continue with: nas search --out {args.out} --resume")
    return 0


def _parse_literal(text: str, what: str = "value") -> Any:
    """A flag's value as JSON (``3``, ``0.5``, ``null``, ``{"C": 16}``), else a bare word as a string
    (``true``/``false`` as booleans); text that starts like JSON but does not parse is an error naming
    `what` (``--strategy-option assignment``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if text.lstrip()[:1] in ('{', '[', '"'):
            raise CLIError(f"{what}: malformed JSON {text!r} ({e.msg} at character {e.pos})") from None
        return text


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise CLIError(f"--input-shape must look like C,H,W (e.g. 3,224,224), got {text!r}") from None
    if not shape or any(v <= 0 for v in shape):
        raise CLIError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _parse_sets(space: Any, items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--set takes VAR=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out[name] = space.variable(name).parse(value)
    return out


def _parse_options(items: Sequence[str], flag: str = "--option") -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise CLIError(f"{flag} takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_literal(value, f"{flag} {key.strip()}")
    return out


def cmd_spaces(args: argparse.Namespace) -> int:
    from nas.registry import get_space, list_spaces

    rows = []
    for name in list_spaces():
        try:
            space = get_space(name)
        except Exception as e:  # a broken plug-in must not hide the others
            rows.append({"name": name, "error": str(e)})
            continue
        rows.append({"name": name, "variables": len(space.variables), "size": space.size(),
                     "presets": sorted(space.presets), "op_choices": [v.name for v in space.op_choices],
                     "task": space.task,
                     "description": space.description.strip().splitlines()[0] if space.description else ""})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']}: ERROR {r['error']}")
            continue
        task = "" if r["task"] == "classification" else f" Task: {r['task']}."
        print(f"{r['name']}: {r['variables']} variables, {r['size']:.3g} architectures.{task} {r['description']}")
        if r["presets"]:
            print(f"  presets: {', '.join(r['presets'])}")
    return 0


def _arch_from_args(args: argparse.Namespace):
    from nas.registry import get_space

    space = get_space(args.space)
    assignment = _parse_sets(space, args.set or [])
    if getattr(args, "arch", None):  # a NAS-Bench-201 cell string; --set overrides its edges
        from search_spaces.nb201 import nb201_assignment_from_string

        if space.name != "nb201":
            raise CLIError(f"--arch takes a NAS-Bench-201 cell string, for the space nb201 (not {args.space!r})")
        assignment = {**nb201_assignment_from_string(args.arch), **assignment}
    g = space.graph(assignment, preset=args.preset, num_classes=args.num_classes,
                    input_shape=_parse_shape(args.input_shape), partial=True, **_parse_options(args.option or []))
    if getattr(args, "inflate", None) is not None:
        from nas.inflate import InflateError, inflate

        if args.inflate < 1:
            raise CLIError(f"--inflate takes a number of frames >= 1, got {args.inflate}")
        try:
            g = inflate(g, args.inflate)
        except InflateError as e:
            raise CLIError(f"--inflate: {e}") from None
    return g


def cmd_describe(args: argparse.Namespace) -> int:
    from nas.describe import render, summary

    g = _arch_from_args(args)
    if args.json:
        print(json.dumps(summary(g)))
    else:
        print(render(g, max_rows=None if args.all else 60))
    return 0


def _train_flag_dest(setting: str) -> str:
    """The flag of a training setting (`--train-seed` for `seed`: `--seed` is the search's seed)."""
    return "train_seed" if setting == "seed" else setting


def _train_flags() -> dict[str, tuple[str | None, str]]:
    from dataclasses import fields

    from nas.train_settings import TrainSettings

    return {_train_flag_dest(f.name): ("train", f.name) for f in fields(TrainSettings)}


_SEARCH_FLAGS = {  # flag dest -> (section, key) in SearchConfig; every training setting has a flag
    "space": (None, "space"), "strategy": (None, "strategy"), "budget": (None, "budget"), "seed": (None, "seed"),
    "out": (None, "out"), "address": (None, "address"), "storage": (None, "storage"), "workers": (None, "workers"),
    "cpus_per_trial": (None, "cpus_per_trial"), "max_params": (None, "max_params"),
    "max_flops": (None, "max_flops"), "gpus_per_trial": (None, "gpus_per_trial"), "asha": (None, "asha"),
    "table": (None, "table"), "objective": (None, "objectives"), "constraint": (None, "constraints"),
    "latency_table": (None, "latency_table"),
    **_train_flags(),
}


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per `nas.train_settings.TrainSettings` field, from its type, default and help."""
    from dataclasses import MISSING, fields

    from nas.train_settings import TrainSettings, setting_types

    group = p.add_argument_group("training settings (each also a key of the config file's [train] table)")
    types = setting_types()
    for f in fields(TrainSettings):
        kind, _ = types[f.name]
        dest = _train_flag_dest(f.name)
        default = f.default if f.default is not MISSING else None
        text = f.metadata["help"] + ("" if default is None else f" (default {default})")
        kw: dict[str, Any] = {"dest": dest, "default": None, "help": text.replace("%", "%%")}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            else:
                kw["metavar"] = {int: "N", float: "X", str: "TEXT"}[kind]
        group.add_argument("--" + dest.replace("_", "-"), **kw)


def search_config_from_args(args: argparse.Namespace):
    """Defaults, then the config file (or the resumed run's config.json), then the flags given."""
    from pathlib import Path

    from nas.config import SearchConfig, read_config_file

    data: dict[str, Any] = {}
    where = "flags"
    if args.config:
        data = read_config_file(args.config)
        where = str(args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
        data = read_config_file(Path(args.out) / "config.json")
        where = str(Path(args.out) / "config.json")
    train = data.get("train") or {}
    data = {**data, "train": dict(train) if isinstance(train, dict) else train}
    for dest, (section, key) in _SEARCH_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            if section and not isinstance(data["train"], dict):
                raise CLIError("the config's 'train' must be a table of settings")
            (data["train"] if section else data)[key] = value
    if args.reference_point:
        try:
            data["reference_point"] = {k: float(v) for k, v in
                                       _parse_options(args.reference_point, "--reference-point").items()}
        except (TypeError, ValueError):
            raise CLIError(f"--reference-point takes METRIC=NUMBER, got {args.reference_point}") from None
    for flag, key in (("strategy_option", "strategy_options"), ("space_option", "space_options")):
        items = getattr(args, flag)
        if items:
            before = data.get(key) or {}
            if not isinstance(before, dict):
                raise CLIError(f"{where}: {key!r} must be a table of options, got {before!r}")
            data[key] = {**before, **_parse_options(items, "--" + flag.replace("_", "-"))}
    return SearchConfig.from_dict(data, where)


def cmd_search(args: argparse.Namespace) -> int:
    import signal
    import threading

    from nas.ray_cluster import raise_on_signal, ray_session
    from nas.search import SearchInterrupted, resume_command, run_search

    cfg = search_config_from_args(args)
    # SIGTERM stops the driver as Ctrl-C does: the trials in flight are stopped, Ray is shut down, the
    # journal keeps what finished (while trials run, `run_trials` turns the first signal into a clean stop)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_on_signal) if main_thread else None
    try:
        with ray_session():  # one private Ray instance for all the searches of this command, then shut down
            outcome = run_search(cfg, resume=args.resume)
    except KeyboardInterrupt as e:  # before or between the trials
        stopped = SearchInterrupted.of_folder(cfg.out, getattr(e, "signum", signal.SIGINT))
    except SearchInterrupted as e:
        stopped = e
    else:
        stopped = None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if stopped is not None:
        print(f"nas: interrupted: {stopped.n_records} evaluations on record in {stopped.folder}; resume with: "
              f"{resume_command(cfg.out)}", file=sys.stderr)
        return stopped.exit_code
    best = outcome.best
    print()
    oom = f", {outcome.n_oom} of them out of memory" if outcome.n_oom else ""
    print(f"{len(outcome.records)} evaluations ({outcome.n_failed} failed{oom}) in {outcome.folder}: "
          f"{outcome.n_trained} architectures trained to the end, {outcome.n_stopped} stopped early (ASHA, not "
          f"ranked), {outcome.n_cached} answered from cache; {outcome.n_rejected} proposals rejected before "
          "training (over the size limits or impossible to build; no budget used)")
    if best is None:
        print("no candidate was trained to the end successfully")
        return 1
    m = best.get("metrics", {})
    first = outcome.objectives[0] if outcome.objectives else None
    if outcome.front is not None:
        names = [o.metric for o in outcome.objectives]
        print(f"Pareto front ({', '.join(o.spec() for o in outcome.objectives)}): {len(outcome.front)} architectures, "
              f"hypervolume {outcome.hypervolume:.6g} (pareto.json); export the K-th with --pareto K:")
        for k, r in enumerate(outcome.front, 1):
            print(f"  {k}: " + ", ".join(f"{n} {v:.6g}" for n, v in zip(names, r["values"], strict=True))
                  + f", arch_id {r['arch_id']}")
        print(f"files: {outcome.folder}/pareto.json, pareto.md, pareto.png, leaderboard.md, evaluations.jsonl")
        return 0
    if first is not None and first.metric != "val_accuracy":
        print(f"best: {first.metric} {best['value']:.6g}, arch_id {best['arch_id']}")
        print(f"assignment: {json.dumps(best['assignment'])}")
        print(f"files: {outcome.folder}/best.json, leaderboard.md, evaluations.jsonl, best_so_far.png")
        return 0
    print(f"best: val_accuracy {best['value']:.4f}"
          + (f", test_accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else "")
          + (f", {m['params']:,} params" if "params" in m else "") + f", arch_id {best['arch_id']}")
    print(f"assignment: {json.dumps(best['assignment'])}")
    print(f"files: {outcome.folder}/best.json, leaderboard.md, evaluations.jsonl, best_so_far.png")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export an architecture. From a search (a run folder, or its best.json) the trained weights and the
    input preprocessing they were trained with are exported by default, in every format; random initial
    weights need --untrained, and every export says which it wrote."""
    from pathlib import Path

    from nas.export import export
    from nas.export_source import ExportSource, resolve
    from nas.preprocessing import describe
    from nas.registry import list_spaces

    if args.rank is not None and args.pareto is not None:
        raise CLIError("--rank K (the K-th best by the first objective) and --pareto K (the K-th point of the "
                       "Pareto front) choose the architecture two ways: give one")
    if args.untrained and (args.weights or args.weights_file):
        raise CLIError("--untrained exports random initial weights; it cannot be combined with --weights or "
                       "--weights-file")
    is_space = not Path(args.source).exists() and (args.source in list_spaces() or ":" in args.source)
    if is_space or args.preset or args.set:
        args.space = args.source
        src = ExportSource(_arch_from_args(args), description=f"space {args.source}")
    else:
        src = resolve(args.source, rank=1 if args.rank is None else args.rank, pareto=args.pareto)
    from_run = Path(args.source).is_dir()
    if args.weights_file:
        weights, what = args.weights_file, f"the weights of {args.weights_file}"
    elif args.untrained:
        weights, what = None, "UNTRAINED: random initial weights (seed 0), as --untrained asked"
    elif src.weights is not None:
        weights, what = src.weights, f"the search's trained weights ({src.weights})"
    elif from_run or args.weights:
        raise CLIError(f"no trained weights were found for {src.description} (the trial's checkpoint is gone "
                       "or the run trained none); pass --untrained to export the architecture with random "
                       "initial weights, or --weights-file FILE")
    else:
        weights, what = None, ("UNTRAINED: random initial weights (seed 0); an architecture without a search's "
                               "weights (give --weights-file FILE for trained ones)")
    files = export(src.arch, args.format, args.out, weights=weights, with_train=args.with_train,
                   train_config=src.train or None, preprocessing=src.preprocessing,
                   task=_task_of(src.train) if args.with_train else None)
    print(f"exported {src.description} as {args.format}, with {what}" if weights is not None
          else f"exported {src.description} as {args.format}, {what}")
    if src.preprocessing is not None:
        print(f"inputs: raw, as the data set gives them; the network first applies the search's preprocessing "
              f"({describe(src.preprocessing)})")
    elif weights is not None and src.weights is not None:
        print("note: the run recorded no input preprocessing (it predates that record); the network expects "
              "inputs prepared as the search's worker did (uint8 / 255, then standardised per channel with the "
              "training split's mean and std)")
    print("files:")
    for f in files:
        print(f"  {f}")
    return 0


def retrain_settings(search: dict[str, Any] | None, flags: dict[str, Any]) -> Any:
    """`nas train`'s settings: the search's, with the flags given over them; a ``recipe`` flag puts the recipe's
    settings in place of the search's (which are all explicit, so a recipe as defaults would change nothing),
    the flags still winning."""
    from nas.train_settings import RECIPES, TrainSettings

    train = {**(search or {}), **RECIPES.get(flags.get("recipe"), {}), **flags}
    return TrainSettings.from_dict(train, "nas train")


def _task_of(train: Any) -> str | None:
    """The task of a run's data set (contrastive, segmentation, ...), for its train.py; None where it cannot be read
    here (the space's task is then used)."""
    from nas.config import SearchConfig
    from nas.evaluation import EvaluationError, get_evaluation
    from nas.train_settings import TrainSettings

    if not train:
        return None
    try:
        return get_evaluation(SearchConfig(train=TrainSettings.from_dict(dict(train), "train")), "train").task
    except (EvaluationError, ValueError, OSError):
        return None


def cmd_train(args: argparse.Namespace) -> int:
    """Train a found architecture (a run folder's best or --rank K, or an architecture .json) to the end, with the
    search's training settings and any training flag given, here or data-parallel on --workers Ray Train
    workers (--gpus: one GPU each)."""
    from nas.config import SearchConfig
    from nas.evaluation import get_evaluation
    from nas.export_source import resolve
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    src = resolve(args.source, rank=args.rank)
    flags = {key: getattr(args, dest) for dest, (_, key) in _train_flags().items()
             if getattr(args, dest, None) is not None}
    settings = retrain_settings(src.train, flags)
    cfg = SearchConfig(address=args.address, cpus_per_trial=args.cpus_per_worker, train=settings)
    metrics = get_evaluation(cfg, "train").retrain(src.arch, args.out, workers=args.workers, use_gpu=args.gpus)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("val_", "test_"))
                       and not k.endswith("_loss") and isinstance(v, int | float))  # the task's: val_accuracy, ...
    print(f"trained {src.description} for {settings.epochs} epoch(s) on {args.workers} worker(s): {scores}")
    print(f"files: {args.out}/weights.pt, arch.json, metrics.json")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from nas.bench import BenchError, run_bench, strategy_options

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    try:
        options = strategy_options(strategies, args.strategy_option or [], args.population_size, args.sample_size)
        reference = {k: float(v) for k, v in _parse_options(args.reference or [], "--reference").items()}
        report = run_bench(args.table, strategies, args.seeds, args.budget_seconds, options,
                           first_seed=args.first_seed, space=args.space, out=args.out,
                           objectives=args.objective or (), reference=reference)
    except BenchError as e:
        raise CLIError(str(e)) from None
    except (TypeError, ValueError) as e:  # a --reference value that is not a number
        raise CLIError(f"--reference takes METRIC=NUMBER: {e}") from None
    print()
    print(report["summary"], end="")
    if args.out:
        plot = "pareto_vs_time.png" if "objectives" in report else "test_vs_time.png"
        print(f"files: {args.out}/summary.txt, results.json, {plot}")
    return 0


def _add_arch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="space name, 'package.module:name' or 'file.py:name'")
    p.add_argument("--preset", help="a preset of the space (see `nas spaces`)")
    p.add_argument("--set", action="append", metavar="VAR=VALUE", help="assign a variable (repeatable)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a space option (repeatable)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-shape", help="C,H,W (or C,T,H,W), without the batch dimension")
    p.add_argument("--inflate", type=int, metavar="FRAMES",
                   help="inflate the 2D network to a video one on FRAMES frames (I3D: k x k -> k x k x k)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="graphnas: neural architecture search on Ray",
                     epilog="`nas search --help` lists each strategy's options. An error is one line `nas: error: "
                            "...` (exit code 2); `nas --debug ...` shows its traceback.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spaces", help="list search spaces and their presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("describe", help="print an architecture of a space")
    _add_arch_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object: params, flops, output_shape, arch_id, ...")
    p.add_argument("--all", action="store_true", help="show every node")
    p.add_argument("--arch", help="nb201 only: a cell string |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("search", help="run (or resume) a search on Ray", epilog=_strategy_options_epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="search space (default resnet)")
    p.add_argument("--strategy", help="evolution | random | combo | darts (default evolution)")
    p.add_argument("--budget", type=int, help="number of evaluations (default 20)")
    p.add_argument("--seed", type=int, help="the search's seed (default 0; training's is --train-seed)")
    p.add_argument("--out", help="output folder (default runs/search)")
    p.add_argument("--address", help="Ray cluster address ('auto' for the cluster this machine is in)")
    p.add_argument("--storage", metavar="URI",
                   help="where trials write their checkpoints (Ray's storage_path): s3://bucket/path, gs://..., or a "
                        "path every node sees (NFS); default: the run folder, which only this machine sees")
    p.add_argument("--workers", type=int, help="trials at once (default and most: what the cluster's nodes can run)")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="may be fractional, e.g. 0.5")
    p.add_argument("--max-params", type=int, help="reject larger proposals before training (they use no budget)")
    p.add_argument("--max-flops", type=int, help="likewise for multiply-accumulates per sample")
    p.add_argument("--asha", action="store_true", default=None, help="ASHA early stopping of weak candidates")
    p.add_argument("--table", help="NAS-Bench-201 CSV (--space nb201): look candidates up instead of training")
    p.add_argument("--objective", action="append", metavar="METRIC:max|min",
                   help="what to optimise (repeatable; default: the evaluation's own, val_accuracy:max); two or more "
                        "search a Pareto front, e.g. --objective val_accuracy:max --objective params:min")
    p.add_argument("--constraint", action="append", metavar="METRIC<=BOUND",
                   help="repeatable, e.g. flops<=3e8 or latency_ms<10 (also >=, >); on params, flops or a latency "
                        "table's latency_ms a proposal is rejected before evaluation (no budget used)")
    p.add_argument("--latency-table", metavar="CSV",
                   help="measured latencies per architecture (columns arch_id or the space's variables, and "
                        "latency_ms): the metric latency_ms, known before evaluation")
    p.add_argument("--reference-point", action="append", metavar="METRIC=VALUE",
                   help="the hypervolume's reference point (default: just beyond the worst value seen)")
    p.add_argument("--strategy-option", action="append", metavar="KEY=VALUE",
                   help="an option of the strategy, e.g. population_size=20; VALUE is JSON or a bare word "
                        "(repeatable; each strategy's options are listed below)")
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--config", help="a TOML or YAML file holding any of these settings")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --out (only budget, workers, cpus/gpus per trial, address and "
                        "storage may change)")
    p.add_argument("--repair", action="store_true",
                   help="move the lines of --out's evaluations.jsonl that are not evaluation records to "
                        "evaluations.rejected.jsonl, say which, and exit (then --resume works)")
    _add_train_flags(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="train a found architecture to the end (data-parallel with --workers N)")
    p.add_argument("source", help="a search's run folder (its best, or --rank K) or an architecture .json")
    p.add_argument("--rank", type=int, default=1, help="the K-th best architecture of a run folder (default 1)")
    p.add_argument("--out", required=True, help="folder for weights.pt, arch.json, metrics.json")
    p.add_argument("--workers", type=int, default=1,
                   help="data-parallel Ray Train workers (DistributedDataParallel); 1: train in this process")
    p.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL); without it workers use CPUs (gloo)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--address", help="Ray cluster address for --workers > 1 (default: a private local instance)")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="strategies on the NAS-Bench-201 table, many seeds, simulated time (no Ray)")
    p.add_argument("--space", default="nb201", help="the tabular space (nb201)")
    p.add_argument("--table", required=True, help="the NAS-Bench-201 CSV (e.g. shared/data/nb201/nb201.csv)")
    p.add_argument("--strategies", default="random,evolution,combo", help="comma-separated (default %(default)s)")
    p.add_argument("--budget-seconds", type=float, default=12000.0,
                   help="simulated seconds per run, 12 epochs charged per evaluation (default %(default)g)")
    p.add_argument("--seeds", type=int, default=100, help="runs per strategy (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1 (default 0)")
    p.add_argument("--population-size", type=int, help="evolution's population size (bench default 15)")
    p.add_argument("--sample-size", type=int, help="evolution's tournament size (bench default 10)")
    p.add_argument("--strategy-option", action="append", metavar="[STRATEGY.]KEY=VALUE",
                   help="e.g. evolution.population_size=20 or combo.fit=map (repeatable)")
    p.add_argument("--objective", action="append", metavar="METRIC:max|min",
                   help="repeatable; two or more make a multi-objective bench (val_accuracy:max with params:min or "
                        "flops:min): each run's Pareto front, its hypervolume on the test accuracy; strategies "
                        "optuna-nsga2 and optuna-tpe are Optuna's samplers (pip install -e \".[bench]\")")
    p.add_argument("--reference", action="append", metavar="METRIC=VALUE",
                   help="the hypervolume's reference point (default val_accuracy=10, params=1.6e6, flops=2.5e8)")
    p.add_argument("--out", help="folder for summary.txt, results.json, test_vs_time.png (pareto_vs_time.png)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export an architecture as a ready-to-train model")
    p.add_argument("source", help="a search's output folder, an architecture .json file, or a space name "
                                  "(with --preset / --set)")
    p.add_argument("--format", default="python", choices=["python", "json", "torchscript", "onnx"])
    p.add_argument("--out", required=True, help="the model file to write, e.g. net.py")
    p.add_argument("--rank", type=int, help="from a search folder: the K-th best architecture (by the first "
                                             "objective; default 1)")
    p.add_argument("--pareto", type=int, metavar="K",
                   help="from a multi-objective search's folder: the K-th point of its Pareto front (pareto.md)")
    p.add_argument("--weights", action="store_true",
                   help="include the search's trained weights (the default from a search; an error where there "
                        "are none)")
    p.add_argument("--untrained", action="store_true",
                   help="export random initial weights (seed 0) instead of the search's trained ones")
    p.add_argument("--weights-file", help="a state dict file to include (loaded with weights_only=True)")
    p.add_argument("--with-train", action="store_true", help="also write train.py with the search's settings")
    p.add_argument("--preset")
    p.add_argument("--set", action="append", metavar="VAR=VALUE")
    p.add_argument("--option", action="append", metavar="KEY=VALUE")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-shape")
    p.set_defaults(func=cmd_export)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The error classes whose message says what is wrong (a setting, a file, an option): printed as one line.
    Imported only once an error happened; the workers' ones (data sets, the table) are looked up where a
    worker module is loaded (`nas` never imports `workers` itself), as only then can they have been raised."""
    from nas.bench import BenchError
    from nas.config import ConfigError
    from nas.evaluation import EvaluationError
    from nas.export import ExportError
    from nas.export_source import ExportSourceError
    from nas.graph import ArchitectureError
    from nas.io import JournalError
    from nas.latency_table import LatencyTableError
    from nas.objectives import ObjectiveError
    from nas.ops import OpError
    from nas.ray_cluster import SearchError
    from nas.space import SpaceError
    from nas.train_settings import SettingsError

    found: list[type[BaseException]] = [CLIError, ConfigError, SettingsError, SearchError, SpaceError,
                                        ArchitectureError, OpError, EvaluationError, ExportError, ExportSourceError,
                                        JournalError, BenchError, ObjectiveError, LatencyTableError, FileNotFoundError]
    for module, name in (("nas.preprocessing", "PreprocessingError"), ("workers.data.arrays", "DatasetError"),
                         ("workers.tabular", "TableError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _one_line(e: BaseException) -> str:
    return " | ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A user error (a bad setting, option, file or journal) prints one line ``nas: error:
    ...`` and returns 2 (``--debug``: raises it, with its traceback); anything else is a bug and raises."""
    parser = make_parser()
    args = parser.parse_args(argv)
    func = cmd_repair if getattr(args, "repair", False) else args.func
    try:
        return int(func(args) or 0)
    except Exception as e:
        if args.debug or not isinstance(e, _user_errors()):
            raise
        print(f"nas: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
