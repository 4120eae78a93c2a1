"""The `nas` command line. Subcommands import what they need lazily so `nas spaces` starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


class CLIError(Exception):
    """A usage error; printed without a traceback."""


def _parse_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
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


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--option takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = _parse_literal(value)
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
                     "description": space.description.strip().splitlines()[0] if space.description else ""})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']}: ERROR {r['error']}")
            continue
        print(f"{r['name']}: {r['variables']} variables, {r['size']:.3g} architectures. {r['description']}")
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
    "out": (None, "out"), "address": (None, "address"), "workers": (None, "workers"),
    "cpus_per_trial": (None, "cpus_per_trial"), "max_params": (None, "max_params"),
    "max_flops": (None, "max_flops"), "gpus_per_trial": (None, "gpus_per_trial"), "asha": (None, "asha"),
    "table": (None, "table"),
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
    if args.config:
        data = read_config_file(args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
        data = read_config_file(Path(args.out) / "config.json")
    train = data.get("train") or {}
    data = {**data, "train": dict(train) if isinstance(train, dict) else train}
    for dest, (section, key) in _SEARCH_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            if section and not isinstance(data["train"], dict):
                raise CLIError("the config's 'train' must be a table of settings")
            (data["train"] if section else data)[key] = value
    if args.strategy_option:
        data["strategy_options"] = {**data.get("strategy_options", {}), **_parse_options(args.strategy_option)}
    if args.space_option:
        data["space_options"] = {**data.get("space_options", {}), **_parse_options(args.space_option)}
    return SearchConfig.from_dict(data, args.config or "flags")


def cmd_search(args: argparse.Namespace) -> int:
    from nas.search import run_search

    cfg = search_config_from_args(args)
    outcome = run_search(cfg, resume=args.resume)
    best = outcome.best
    print()
    rejected = f", {outcome.n_rejected} proposals over the size limits skipped" if outcome.n_rejected else ""
    print(f"{len(outcome.records)} evaluations ({outcome.n_failed} failed{rejected}) in {outcome.folder}")
    if best is None:
        print("no candidate finished successfully")
        return 1
    m = best.get("metrics", {})
    print(f"best: val_accuracy {best['value']:.4f}"
          + (f", test_accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else "")
          + (f", {m['params']:,} params" if "params" in m else "") + f", arch_id {best['arch_id']}")
    print(f"assignment: {json.dumps(best['assignment'])}")
    print(f"files: {outcome.folder}/best.json, leaderboard.md, evaluations.jsonl, best_so_far.png")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.export import export
    from nas.export_source import ExportSource, resolve
    from nas.registry import list_spaces

    is_space = not Path(args.source).exists() and (args.source in list_spaces() or ":" in args.source)
    if is_space or args.preset or args.set:
        args.space = args.source
        src = ExportSource(_arch_from_args(args), description=f"space {args.source}")
    else:
        src = resolve(args.source, rank=args.rank)
    weights = None
    if args.weights_file:
        weights = args.weights_file
    elif args.weights:
        if src.weights is None:
            raise CLIError(f"--weights: no trained weights were found for {src.description}")
        weights = src.weights
    files = export(src.arch, args.format, args.out, weights=weights, with_train=args.with_train,
                   train_config=src.train or None)
    print(f"exported {src.description} as {args.format}:")
    for f in files:
        print(f"  {f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from nas.bench import BenchError, run_bench, strategy_options

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    try:
        options = strategy_options(strategies, args.strategy_option or [], args.population_size, args.sample_size)
        report = run_bench(args.table, strategies, args.seeds, args.budget_seconds, options,
                           first_seed=args.first_seed, space=args.space, out=args.out)
    except BenchError as e:
        raise CLIError(str(e)) from None
    print()
    print(report["summary"], end="")
    if args.out:
        print(f"files: {args.out}/summary.txt, results.json, test_vs_time.png")
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
    parser = argparse.ArgumentParser(prog="nas", description="graphnas: neural architecture search on Ray")
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

    p = sub.add_parser("search", help="run (or resume) a search on Ray")
    p.add_argument("--space", help="search space (default resnet)")
    p.add_argument("--strategy", help="evolution | random | combo | darts (default evolution)")
    p.add_argument("--budget", type=int, help="number of evaluations (default 20)")
    p.add_argument("--seed", type=int, help="the search's seed (default 0; training's is --train-seed)")
    p.add_argument("--out", help="output folder (default runs/search)")
    p.add_argument("--address", help="Ray cluster address ('auto' for the cluster this machine is in)")
    p.add_argument("--workers", type=int, help="trials at once (default: CPUs // cpus per trial)")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="may be fractional, e.g. 0.5")
    p.add_argument("--max-params", type=int, help="reject larger proposals before training (they use no budget)")
    p.add_argument("--max-flops", type=int, help="likewise for multiply-accumulates per sample")
    p.add_argument("--asha", action="store_true", default=None, help="ASHA early stopping of weak candidates")
    p.add_argument("--table", help="NAS-Bench-201 CSV (--space nb201): look candidates up instead of training")
    p.add_argument("--strategy-option", action="append", metavar="KEY=VALUE",
                   help="e.g. population_size=20 (repeatable)")
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--config", help="a TOML or YAML file holding any of these settings")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    _add_train_flags(p)
    p.set_defaults(func=cmd_search)

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
    p.add_argument("--out", help="folder for summary.txt, results.json, test_vs_time.png")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export an architecture as a ready-to-train model")
    p.add_argument("source", help="a search's output folder, an architecture .json file, or a space name "
                                  "(with --preset / --set)")
    p.add_argument("--format", default="python", choices=["python", "json", "torchscript", "onnx"])
    p.add_argument("--out", required=True, help="the model file to write, e.g. net.py")
    p.add_argument("--rank", type=int, default=1, help="from a search folder: the K-th best architecture")
    p.add_argument("--weights", action="store_true", help="include the trained weights (a search's trial)")
    p.add_argument("--weights-file", help="a state dict file to include (loaded with weights_only=True)")
    p.add_argument("--with-train", action="store_true", help="also write train.py with the search's settings")
    p.add_argument("--preset")
    p.add_argument("--set", action="append", metavar="VAR=VALUE")
    p.add_argument("--option", action="append", metavar="KEY=VALUE")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-shape")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from nas.config import ConfigError
    from nas.export import ExportError
    from nas.export_source import ExportSourceError
    from nas.graph import ArchitectureError
    from nas.ops import OpError
    from nas.search import SearchError
    from nas.space import SpaceError

    try:
        return int(args.func(args) or 0)
    except (CLIError, SpaceError, ArchitectureError, OpError, ConfigError, SearchError, ExportError,
            ExportSourceError, FileNotFoundError) as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
