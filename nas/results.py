"""A search's output folder: the append-only journal of evaluations and what is derived from it.

``evaluations.jsonl`` is the source of truth: one line per finished evaluation, appended and fsynced
before the strategy hears of it. Everything else (leaderboard, best.json, strategy snapshot, plot) is
rewritten atomically from it, so a kill at any point loses nothing already evaluated and leaves no
half-written file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nas.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

EVALUATIONS = "evaluations.jsonl"
CHECKPOINTS = "checkpoints.jsonl"  # trial id -> where the driver saw its final checkpoint and weights


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    # -- files --------------------------------------------------------------------------------------
    @property
    def evaluations_file(self) -> Path:
        return self.path / EVALUATIONS

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def best_file(self) -> Path:
        return self.path / "best.json"

    @property
    def strategy_file(self) -> Path:
        return self.path / "strategy_state.json"

    @property
    def weights_file(self) -> Path:
        return self.path / "best_weights.pt"

    @property
    def checkpoints_file(self) -> Path:
        return self.path / CHECKPOINTS

    # -- journal ------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        rows, _torn = read_jsonl(self.evaluations_file)
        seen: set[str] = set()
        out = []
        for r in rows:  # a record is unique by trial id; keep the first
            key = r.get("trial_id")
            if key in seen:
                continue
            seen.add(key)
            out.append(r)
        return out

    def repair_torn_tail(self) -> int:
        """Drop a torn last line left by a kill (it is not a finished evaluation); returns lines dropped."""
        rows, torn = read_jsonl(self.evaluations_file)
        if torn:
            import json

            atomic_write_text(self.evaluations_file, "".join(json.dumps(r, separators=(",", ":")) + "\n"
                                                             for r in rows))
        return torn

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.evaluations_file, record)

    # -- where trials left their files (recorded by the driver, never found by globbing Ray's layout) ------
    def record_checkpoint(self, trial_id: str, checkpoint: str, weights_file: str | None) -> Path | None:
        """Note trial `trial_id`'s final checkpoint folder (and the weights file in it, where the kind of
        evaluation trains a model and the file is there); returns the weights file or None."""
        weights = Path(checkpoint) / weights_file if weights_file else None
        weights = weights if weights is not None and weights.is_file() else None
        append_jsonl(self.checkpoints_file, {"trial_id": trial_id, "checkpoint": str(checkpoint),
                                             "weights": None if weights is None else str(weights)})
        return weights

    def checkpoint_of(self, trial_id: str) -> dict[str, Any] | None:
        """The last checkpoint record of `trial_id`, or None."""
        rows, _ = read_jsonl(self.checkpoints_file)
        hits = [r for r in rows if r.get("trial_id") == trial_id]
        return hits[-1] if hits else None

    def write_best_weights(self, weights: Path, trial_id: str, arch_id: str | None) -> None:
        """Copy the best trial's weights into the run folder (``best_weights.pt``, and where from)."""
        from nas.io import atomic_write_bytes

        atomic_write_bytes(self.weights_file, Path(weights).read_bytes())
        atomic_write_json(self.path / "best_weights.json", {"trial_id": trial_id, "arch_id": arch_id,
                                                           "source": Path(weights).name})

    # -- derived views ------------------------------------------------------------------------------
    def write_leaderboard(self, records: list[dict[str, Any]], metric: str, mode: str, top: int = 20) -> None:
        ok = self.ranked([r for r in records if not r.get("cached")], mode)  # one row per trained architecture
        lines = [f"# Leaderboard ({metric}, {mode}; {len(ok)} architectures trained, "
                 f"{sum(r.get('status') != 'ok' for r in records)} failed)", "",
                 f"| rank | {metric} | test_accuracy | params | flops | arch_id | trial | assignment |",
                 "|---:|---:|---:|---:|---:|---|---|---|"]
        for i, r in enumerate(ok[:top], 1):
            m = r.get("metrics", {})
            lines.append(f"| {i} | {r['value']:.4f} | {_fmt(m.get('test_accuracy'))} | {m.get('params', '')} | "
                         f"{m.get('flops', '')} | {r.get('arch_id', '')} | {r.get('trial_id', '')} | "
                         f"`{_compact(r.get('assignment'))}` |")
        atomic_write_text(self.path / "leaderboard.md", "\n".join(lines) + "\n")

    def ranked(self, records: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
        ok = [r for r in records if r.get("status") == "ok" and _finite(r.get("value"))]
        return sorted(ok, key=lambda r: r["value"], reverse=(mode == "max"))

    def write_best(self, record: dict[str, Any], arch: dict[str, Any], metric: str) -> None:
        atomic_write_json(self.best_file, {
            "metric": metric, "value": record["value"], "trial_id": record["trial_id"],
            "arch_id": record["arch_id"], "assignment": record["assignment"], "metrics": record.get("metrics", {}),
            "train": record.get("train"), "arch": arch,
        })

    def plot(self, records: list[dict[str, Any]], metric: str, mode: str) -> Path | None:
        """best-so-far against evaluations and against wall time (PNG)."""
        if not records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        best, xs, ts, ys = None, [], [], []
        for i, r in enumerate(records, 1):
            v = r.get("value") if r.get("status") == "ok" else None
            if _finite(v) and (best is None or (v > best if mode == "max" else v < best)):
                best = v
            if best is not None:
                xs.append(i)
                ts.append(r.get("elapsed_s", 0.0))
                ys.append(best)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, x, label in ((axes[0], xs, "evaluations"), (axes[1], ts, "wall time (s)")):
            ax.step(x, ys, where="post")
            ax.set_xlabel(label)
            ax.set_ylabel(f"best {metric} so far")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{len(records)} evaluations")
        fig.tight_layout()
        out = self.path / "best_so_far.png"
        tmp = self.path / ".best_so_far.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(out)
        return out


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if _finite(v) else ""


def _compact(assignment: Any) -> str:
    if not isinstance(assignment, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in assignment.items())
