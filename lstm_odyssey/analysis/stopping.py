"""What other stopping rules would have done: a study's recorded histories replayed under a stricter rule.

A stricter rule (a larger plateau threshold `trainer.min_improvement`, a smaller patience or epoch cap) only
stops a run earlier, and up to that epoch the run is exactly what its record's history says, so the replay
is exact: which runs would have ended at the cap, where each would have stopped, and its best validation
score then. A looser rule (a smaller threshold, a higher cap) needs epochs that were never run: the replay
refuses it. This answers "how do I get the capped share under 20 % without cutting the good runs short?"
from the runs already paid for. The rule itself is `lifecycle.stop_reason`, replayed epoch by epoch; time caps
are not replayed (the history keeps no clock per epoch).

    python -m lstm_odyssey.analysis.stopping results/odyssey_jsb/paper --min-improvement 0.001 0.002 0.005
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..lifecycle import end_epoch, improves, new_loop, stop_reason
from ..results import OK, find_records, read_record
from ..schema import complete
from .text import markdown_table

STOPPING_KEYS = ("min_improvement", "patience", "epochs")


def replay(record: dict, **rule: float | int | None) -> tuple[str, int, float]:
    """(stopped_by, epochs run, best validation objective) of `record`'s run under its own stopping rule with
    `rule` (min_improvement, patience, epochs) changed; the change must make the rule stricter."""
    trainer = {**complete(record["config"])["trainer"], "max_minutes": None}
    for key, value in rule.items():
        if key not in STOPPING_KEYS:
            raise ValueError(f"cannot replay {key!r}: only {', '.join(STOPPING_KEYS)} can be changed")
        old = trainer.get(key)
        looser = (value or 0) < (old or 0) if key == "min_improvement" else old is not None and (value is None or value > old)
        if looser:
            raise ValueError(f"trainer.{key}={value} is looser than the run's {old}: the replay would need epochs "
                             "that were never run; rerun the study with it instead")
        trainer[key] = value
    metric = f"val_{record['metric']}"
    loop = new_loop()
    for entry in record["history"]:
        objective = entry[metric]
        best = {"objective": objective, "epoch": entry["epoch"]} if improves(loop, objective) else None
        end_epoch(loop, entry, best)
        reason = stop_reason(trainer, loop)
        if reason:
            return reason, loop["epoch"], loop["best"]["objective"]
    return record["stopped_by"], loop["epoch"], loop["best"]["objective"] if loop["best"] else float("nan")


def what_if(records: Sequence[dict], thresholds: Sequence[float]) -> pd.DataFrame:
    """One row per plateau threshold: the share of ok runs the cap would end, the epochs trained, the best
    validation score, and how much worse the runs end (all, and the best 10 % under the recorded rule)."""
    runs = [r for r in records if r.get("status") == OK and r.get("history")]
    if not runs:
        raise ValueError("no ok run with a history to replay: point it at a study's folder of result.json records")
    recorded = [replay(r) for r in runs]
    top = sorted(range(len(runs)), key=lambda i: recorded[i][2])[: max(1, len(runs) // 10)]
    rows = []
    for threshold in thresholds:
        out = [replay(r, min_improvement=threshold) for r in runs]
        worse = [o[2] - base[2] for o, base in zip(out, recorded)]
        rows.append({"min_improvement": threshold, "runs": len(runs),
                     "capped": sum(o[0] == "epoch_cap" for o in out) / len(runs),
                     "plateau": sum(o[0] == "plateau" for o in out) / len(runs),
                     "epochs": sum(o[1] for o in out), "best_val": min(o[2] for o in out),
                     "worse_max": max(worse), "top_worse_max": max(worse[i] for i in top)})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_odyssey.analysis.stopping",
                                     description="Replay a study's runs under stricter plateau thresholds.")
    parser.add_argument("study", help="a sweep folder with result.json records")
    parser.add_argument("--min-improvement", type=float, nargs="+", required=True, metavar="FRACTION")
    args = parser.parse_args(argv)
    if not Path(args.study).exists():
        parser.error(f"{args.study} does not exist: give a study's folder, e.g. results/odyssey_jsb/paper")
    try:
        table = what_if([read_record(p.parent) for p in find_records(args.study)], args.min_improvement)
    except ValueError as err:
        parser.error(str(err))
    print(markdown_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
