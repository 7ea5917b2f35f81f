"""The analysis plan validated by simulation: paired studies with planted effects, judged many times over.

Each replicate is one comparison of a cell with the reference over `pairs` paired trials, judged by the claim
"the cell makes no difference within ±δ" (`verdicts.equivalence`: TOST for *supported*, a test beyond ±δ for
*contradicted*). The cases plant a true null, true equivalence at δ/2 and a harm of 2δ, each with normal pair
noise and with heavy tails like the paper protocol's: a share of trials never learn (learning rates below 1e-5),
so both runs of such a pair end far up (NLL 20-60) and their difference is huge in either direction. Measured
per case and test: how often each verdict comes out (a false *contradicted* where the claim holds, a false
*supported* where it does not), and how often the 95 % interval covers the planted effect.

    python -m lstm_odyssey.analysis.simulate --replicates 500     # the table in docs/analysis.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .inference import paired_mean, paired_shift
from .text import markdown_table
from .verdicts import CONTRADICTED, SUPPORTED, equivalence

DELTA = 0.05          # JSB's margin in nats per frame
PAIR_SD = 0.1         # sd of a paired difference between two runs that learned (the Adam study's: about 0.09)
TAIL_SHARE = 0.3      # share of trials that never learn (15 of 50 under the paper protocol)
TAIL_SD = 3.0         # sd of a paired difference between two runs that never learned (NLL 20-60)
TESTS = {"rank": paired_shift, "t": paired_mean}


@dataclass(frozen=True)
class Case:
    name: str
    effect: float        # the planted harm of the cell (nats)
    heavy: bool          # a share of pairs never learned
    claim_holds: bool    # |effect| < δ: the claim "no difference within δ" is true

    def draw(self, rng: np.random.Generator, pairs: int) -> np.ndarray:
        noise = rng.normal(0.0, PAIR_SD, pairs)
        if self.heavy:
            tail = rng.random(pairs) < TAIL_SHARE
            noise[tail] = rng.normal(0.0, TAIL_SD, tail.sum())
        return self.effect + noise


CASES = [Case(f"{what}{', heavy tails' if heavy else ''}", effect, heavy, holds)
         for heavy in (False, True)
         for what, effect, holds in (("null (0)", 0.0, True), ("equivalent (δ/2)", DELTA / 2, True),
                                     ("harm (2δ)", 2 * DELTA, False))]


def simulate(replicates: int = 500, pairs: int = 50, seed: int = 0, alpha: float = 0.05,
             cases: Sequence[Case] = tuple(CASES), tests: Sequence[str] = tuple(TESTS)) -> pd.DataFrame:
    """One row per case × test: the share of each verdict, the false rate (contradicted where the claim holds,
    supported where it does not), the power (the right verdict), the 95 % interval's coverage and median width."""
    rows = []
    for i, case in enumerate(cases):
        rng = np.random.default_rng([seed, i])
        draws = [case.draw(rng, pairs) for _ in range(replicates)]
        for test in tests:
            verdicts, covered, widths = [], [], []
            for d in draws:
                s = TESTS[test](d)
                verdicts.append(equivalence({"cell": s}, DELTA, alpha)[0].verdict)
                covered.append(s.low <= case.effect <= s.high)
                widths.append(s.high - s.low)
            v = pd.Series(verdicts)
            supported, contradicted = float((v == SUPPORTED).mean()), float((v == CONTRADICTED).mean())
            rows.append({
                "case": case.name, "effect": case.effect, "test": test, "pairs": pairs, "replicates": replicates,
                "supported": supported, "contradicted": contradicted, "inconclusive": 1 - supported - contradicted,
                "false_rate": contradicted if case.claim_holds else supported,
                "power": supported if case.claim_holds else contradicted,
                "coverage": float(np.mean(covered)), "ci_width": float(np.median(widths)),
            })
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_odyssey.analysis.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = simulate(args.replicates, args.pairs, args.seed)
    print(markdown_table(table, ["case", "test", "supported", "contradicted", "inconclusive", "false_rate", "power",
                                 "coverage", "ci_width"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
