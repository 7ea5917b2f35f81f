"""What other stopping rules would have done: a study's recorded histories replayed under a stricter rule.

A stricter rule (a larger plateau threshold `trainer.min_improvement`, a smaller patience or epoch cap) only
stops a run earlier, and up to that epoch the run is exactly what its record's history says, so the replay
is exact: which runs would have ended at the cap, where each would have stopped, and its best validation
score then. A looser rule (a smaller threshold, a higher cap) needs epochs that were never run: the replay
refuses it. This answers "how do I get the capped share under 20 % without cutting the good runs short?"
from the runs already paid for. The rule itself is `lifecycle.stop_reason`, replayed epoch by epoch; time caps
are not replayed (the history keeps no clock per epoch).

    python -m lstm_odyssey.analysis.stopping results/odyssey_jsb/paper --min-improvement 0.001 0.002 0.005
    python -m lstm_odyssey.analysis.stopping results/modern_pilot --min-improvement 0.001 0.002 --patience 10 \
        --epochs 150 200 --lr-min 1e-4 1e-3      # a row per rule and per lower end of the learning-rate range
"""

from __future__ import annotations

import argparse
import itertools
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


def what_if(records: Sequence[dict], thresholds: Sequence[float | None] = (None,), patiences: Sequence[int | None] = (None,),
            caps: Sequence[int | None] = (None,), lr_floors: Sequence[float | None] = (None,)) -> pd.DataFrame:
    """One row per rule (plateau threshold × patience × epoch cap; None keeps each run's own) and per lower end of
    the learning-rate range (`lr_floors`: only the runs at `optim.lr` ≥ it; None keeps all): the share of ok runs
    the cap would end, the epochs trained, the best validation score, and how much worse the runs end (all, and
    the best 10 % under the recorded rule)."""
    runs = [r for r in records if r.get("status") == OK and r.get("history")]
    if not runs:
        raise ValueError("no ok run with a history to replay: point it at a study's folder of result.json records")
    rows = []
    for lr_min in lr_floors:
        kept = [r for r in runs if lr_min is None or learning_rate(r) >= lr_min]
        if not kept:
            raise ValueError(f"no ok run has a learning rate of at least {lr_min:g}")
        recorded = [replay(r) for r in kept]
        top = sorted(range(len(kept)), key=lambda i: recorded[i][2])[: max(1, len(kept) // 10)]
        for threshold, patience, cap in itertools.product(thresholds, patiences, caps):
            rule = {k: v for k, v in zip(STOPPING_KEYS, (threshold, patience, cap)) if v is not None}
            out = [replay(r, **rule) for r in kept]
            worse = [o[2] - base[2] for o, base in zip(out, recorded)]
            rows.append({"lr_min": lr_min, "min_improvement": threshold, "patience": patience, "cap": cap,
                         "runs": len(kept), "capped": sum(o[0] == "epoch_cap" for o in out) / len(kept),
                         "plateau": sum(o[0] == "plateau" for o in out) / len(kept),
                         "epochs": sum(o[1] for o in out), "best_val": min(o[2] for o in out),
                         "worse_max": max(worse), "top_worse_max": max(worse[i] for i in top)})
    table = pd.DataFrame(rows)  # a column only for what was replayed
    return table.drop(columns=[c for c in ("lr_min", "min_improvement", "patience", "cap") if table[c].isna().all()])


def learning_rate(record: dict) -> float:
    """The run's learning rate (`optim.lr` of its hyperparameters or config)."""
    lr = (record.get("hparams") or {}).get("optim.lr", (record.get("config", {}).get("optim") or {}).get("lr"))
    if lr is None:
        raise ValueError(f"the run in {record.get('run_dir', '?')} records no optim.lr: --lr-min needs it")
    return float(lr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_odyssey.analysis.stopping",
                                     description="Replay a study's runs under stricter stopping rules.")
    parser.add_argument("study", help="a sweep folder with result.json records")
    parser.add_argument("--min-improvement", type=float, nargs="+", default=[None], metavar="FRACTION",
                        help="plateau thresholds (trainer.min_improvement) to replay")
    parser.add_argument("--patience", type=int, nargs="+", default=[None], metavar="EPOCHS", help="patiences to replay")
    parser.add_argument("--epochs", type=int, nargs="+", default=[None], metavar="CAP", help="epoch caps to replay")
    parser.add_argument("--lr-min", type=float, nargs="+", default=[None], metavar="LR",
                        help="lower ends of the learning-rate range: a row per floor, over the runs at optim.lr >= it")
    args = parser.parse_args(argv)
    if not Path(args.study).exists():
        parser.error(f"{args.study} does not exist: give a study's folder, e.g. results/odyssey_jsb/paper")
    if args.min_improvement == args.patience == args.epochs == [None]:
        parser.error("give a rule to replay: --min-improvement, --patience and/or --epochs (e.g. --epochs 200)")
    try:
        table = what_if([read_record(p.parent) for p in find_records(args.study)], args.min_improvement,
                        args.patience, args.epochs, args.lr_min)
    except ValueError as err:
        parser.error(str(err))
    print(markdown_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
