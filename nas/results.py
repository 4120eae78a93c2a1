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

from nas.io import JournalError, append_jsonl, atomic_write_json, atomic_write_text, parse_jsonl, read_jsonl

EVALUATIONS = "evaluations.jsonl"
CHECKPOINTS = "checkpoints.jsonl"  # trial id -> where the driver saw its final checkpoint and weights
REJECTED = "evaluations.rejected.jsonl"  # lines `RunFolder.repair` moved out of the journal


def record_problem(row: dict[str, Any] | None) -> str:
    """Why a journal line's object is not an evaluation record ("" when it is one)."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [k for k in ("trial_id", "assignment", "status") if k not in row]
    if missing:
        return f"no {', '.join(missing)}"
    if not isinstance(row["trial_id"], str) or not isinstance(row["assignment"], dict):
        return "trial_id must be a string and assignment an object"
    if row["status"] == "ok" and not _finite(row.get("value")):
        return f"status ok without a finite value (value {row.get('value')!r})"
    return ""


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
        """The evaluations on record, in journal order (the first of a trial id's lines). A torn last line
        (a kill mid-write) is skipped; any other line that is not an evaluation record raises
        `nas.io.JournalError` naming the file and the line (`repair` moves such lines aside)."""
        lines = parse_jsonl(self.evaluations_file)
        seen: set[str] = set()
        out = []
        for k, (i, _text, row, why) in enumerate(lines):
            why = why or record_problem(row)
            if why:
                if k == len(lines) - 1 and row is None:
                    continue  # a torn last line: not a finished evaluation
                raise JournalError(f"{self.evaluations_file}: line {i} is not an evaluation record ({why}); "
                                   f"the file is corrupted. `nas search --out {self.path} --repair` moves such "
                                   f"lines to {REJECTED}", self.evaluations_file, [i])
            key = row["trial_id"]
            if key in seen:  # a record is unique by trial id; keep the first
                continue
            seen.add(key)
            out.append(row)
        return out

    def repair_torn_tail(self) -> int:
        """Drop a torn last line left by a kill (it is not a finished evaluation); returns lines dropped."""
        lines = parse_jsonl(self.evaluations_file)
        if not lines or lines[-1][2] is not None:
            return 0
        atomic_write_text(self.evaluations_file, "".join(text + "\n" for _, text, _, _ in lines[:-1]))
        return 1

    def repair(self) -> list[tuple[int, str, str]]:
        """Move every line of the journal that is not an evaluation record (a torn last line too) to
        ``evaluations.rejected.jsonl`` (appended, with its line number and why) and keep the others as they
        were; returns (line number, why, text) of each line moved."""
        lines = parse_jsonl(self.evaluations_file)
        bad = [(i, why or record_problem(row), text) for i, text, row, why in lines if why or record_problem(row)]
        if not bad:
            return []
        for i, why, text in bad:
            append_jsonl(self.path / REJECTED, {"line": i, "why": why, "text": text})
        good = [text for i, text, row, why in lines if not (why or record_problem(row))]
        atomic_write_text(self.evaluations_file, "".join(t + "\n" for t in good))
        return bad

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.evaluations_file, record)

    # -- where trials left their files (recorded by the driver, never found by globbing Ray's layout) ------
    def record_checkpoint(self, trial_id: str, checkpoint: str, weights_file: str | None) -> Path | None:
        """Note trial `trial_id`'s final checkpoint folder (and the weights file in it, where the kind of
        evaluation trains a model and the file is there), with the input preprocessing the worker saved
        beside the weights (``preprocessing``: scale, per-channel mean and std; None where there is none);
        returns the weights file or None."""
        from nas.preprocessing import PREPROCESSING_FILE, read_preprocessing

        weights = Path(checkpoint) / weights_file if weights_file else None
        weights = weights if weights is not None and weights.is_file() else None
        pre = read_preprocessing(Path(checkpoint) / PREPROCESSING_FILE) if weights is not None else None
        append_jsonl(self.checkpoints_file, {"trial_id": trial_id, "checkpoint": str(checkpoint),
                                             "weights": None if weights is None else str(weights),
                                             "preprocessing": pre})
        return weights

    def checkpoint_of(self, trial_id: str) -> dict[str, Any] | None:
        """The last checkpoint record of `trial_id` (trial_id, checkpoint, weights, preprocessing), or None.
        A record written before preprocessing was recorded gets it from the checkpoint folder where that
        still holds it, else None."""
        rows, _ = read_jsonl(self.checkpoints_file)
        hits = [r for r in rows if r.get("trial_id") == trial_id]
        if not hits:
            return None
        rec = dict(hits[-1])
        if "preprocessing" not in rec:
            from nas.preprocessing import PREPROCESSING_FILE, read_preprocessing

            rec["preprocessing"] = (read_preprocessing(Path(rec["checkpoint"]) / PREPROCESSING_FILE)
                                    if rec.get("weights") and rec.get("checkpoint") else None)
        return rec

    def write_best_weights(self, weights: Path, trial_id: str, arch_id: str | None) -> None:
        """Copy the best trial's weights into the run folder (``best_weights.pt``), and write where from and
        the input preprocessing they were trained with (``best_weights.json``: trial_id, arch_id, source,
        preprocessing)."""
        from nas.io import atomic_write_bytes
        from nas.preprocessing import PREPROCESSING_FILE, read_preprocessing

        atomic_write_bytes(self.weights_file, Path(weights).read_bytes())
        atomic_write_json(self.path / "best_weights.json", {
            "trial_id": trial_id, "arch_id": arch_id, "source": Path(weights).name,
            "preprocessing": read_preprocessing(Path(weights).parent / PREPROCESSING_FILE)})

    # -- derived views ------------------------------------------------------------------------------
    def write_leaderboard(self, records: list[dict[str, Any]], metric: str, mode: str, top: int = 20,
                          durable: bool = True) -> None:
        """``leaderboard.md``: the architectures trained to the end, ranked (one row each; cached answers
        are not rows); below them, not ranked, those ASHA stopped early, with the epoch each reached (their
        values are partial, at a lower fidelity, so they are never compared with complete ones)."""
        trained = [r for r in records if not r.get("cached")]
        ok = self.ranked(trained, mode)
        stopped = sorted((r for r in trained if r.get("status") == "stopped" and _finite(r.get("value"))),
                         key=lambda r: r["value"], reverse=(mode == "max"))
        n_failed = sum(r.get("status") in ("failed", "oom") and not r.get("cached") for r in records)  # oom: a failure
        n_cached = sum(bool(r.get("cached")) for r in records)
        # the test split's score of the metric searched on (test_miou beside val_miou), else test_accuracy
        test = "test_" + metric[4:] if metric.startswith("val_") else "test_accuracy"
        lines = [f"# Leaderboard ({metric}, {mode}; {len(ok)} architectures trained, {len(stopped)} stopped "
                 f"early, {n_failed} failed, {n_cached} cached answers)", "",
                 f"| rank | {metric} | {test} | params | flops | arch_id | trial | assignment |",
                 "|---:|---:|---:|---:|---:|---|---|---|"]
        for i, r in enumerate(ok[:top], 1):
            m = r.get("metrics", {})
            lines.append(f"| {i} | {r['value']:.4f} | {_fmt(m.get(test))} | {m.get('params', '')} | "
                         f"{m.get('flops', '')} | {r.get('arch_id', '')} | {r.get('trial_id', '')} | "
                         f"`{_compact(r.get('assignment'))}` |")
        if stopped:
            lines += ["", f"## Stopped early by ASHA (not ranked: {metric} at the epoch reached)", "",
                      f"| stopped at epoch | {metric} | params | flops | arch_id | trial | assignment |",
                      "|---:|---:|---:|---:|---|---|---|"]
            for r in stopped[:top]:
                m = r.get("metrics", {})
                lines.append(f"| {r.get('epoch', m.get('epoch', ''))} | {r['value']:.4f} | {m.get('params', '')} | "
                             f"{m.get('flops', '')} | {r.get('arch_id', '')} | {r.get('trial_id', '')} | "
                             f"`{_compact(r.get('assignment'))}` |")
        atomic_write_text(self.path / "leaderboard.md", "\n".join(lines) + "\n", durable)

    def ranked(self, records: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
        """The complete evaluations (status "ok", finite value) of `records`, best first. Stopped (partial),
        failed and rejected ones are never ranked: what best.json, best weights and ``export --rank`` use."""
        ok = [r for r in records if r.get("status") == "ok" and _finite(r.get("value"))]
        return sorted(ok, key=lambda r: r["value"], reverse=(mode == "max"))

    def write_best(self, record: dict[str, Any], arch: dict[str, Any], metric: str) -> None:
        if record.get("status") != "ok":  # a stopped (partial) or failed evaluation is never the best
            raise ValueError(f"best.json takes a complete evaluation, not one with status {record.get('status')!r}")
        atomic_write_json(self.best_file, {
            "metric": metric, "value": record["value"], "trial_id": record["trial_id"],
            "arch_id": record["arch_id"], "assignment": record["assignment"], "metrics": record.get("metrics", {}),
            "train": record.get("train"), "arch": arch,
        })

    def plot(self, records: list[dict[str, Any]], metric: str, mode: str) -> Path | None:
        """best-so-far (complete evaluations only, as ranked) against evaluations and wall time (PNG)."""
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
