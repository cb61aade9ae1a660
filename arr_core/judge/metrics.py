"""Agreement of judgments with human labels: accuracy with a bootstrap interval, tie and abstain rates,
and order diagnostics (accuracy with the images as given vs reversed; accuracy when the preferred
image is shown first vs second — the judge's position bias).

A judgment is *correct* when its outcome is a win and its uniquely best image is the human-preferred
one; ties and abstentions count as not correct (and are reported as rates of their own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from arr_core.data.records import PreferenceRecord
from arr_core.judge.judge import Judgment, OrderResult
from arr_core.stats import bootstrap_ci


def reversed_record(record: PreferenceRecord) -> PreferenceRecord:
    """The same record with its candidates (and their labels) in reverse order."""
    return dataclasses.replace(
        record, images=list(reversed(record.images)),
        label_rank=list(reversed(record.label_rank)) if record.label_rank is not None else None,
        label_score=list(reversed(record.label_score)) if record.label_score is not None else None)


def is_correct(j: Judgment, record: PreferenceRecord) -> bool:
    return j.winner is not None and j.winner == record.preferred_index()


def _order_top(o: OrderResult) -> int | None:
    if o.abstained or o.rank is None:
        return None
    return o.rank.index(1)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def accuracy_summary(judgments: Sequence[Judgment], records: Sequence[PreferenceRecord], *,
                     seed: int = 0) -> dict[str, Any]:
    """accuracy (point, lo, hi: percentile bootstrap 95 %), tie_rate, abstain_rate, n."""
    if len(judgments) != len(records):
        raise ValueError(f"got {len(judgments)} judgments for {len(records)} records")
    correct = [float(is_correct(j, r)) for j, r in zip(judgments, records, strict=True)]
    point, lo, hi = bootstrap_ci(correct, seed=seed)
    n = len(judgments)
    return {
        "n": n, "accuracy": point, "accuracy_lo": lo, "accuracy_hi": hi,
        "tie_rate": sum(j.outcome == "tie" for j in judgments) / n if n else float("nan"),
        "abstain_rate": sum(j.outcome == "abstain" for j in judgments) / n if n else float("nan"),
    }


def order_summary(judgments: Sequence[Judgment], records: Sequence[PreferenceRecord], *,
                  seed: int = 0) -> dict[str, Any]:
    """Per presented order, from judgments that asked both the identity and the reversed order
    (``swap``): forward/reversed accuracy, their gap, the position gap (accuracy when the preferred
    image was shown first minus when it was shown second) and the rate of picking position 1."""
    fwd: list[float] = []
    rev: list[float] = []
    pref_first: list[float] = []
    pref_second: list[float] = []
    first_pick: list[float] = []
    for j, r in zip(judgments, records, strict=True):
        n = len(r.images)
        pref = r.preferred_index()
        for o in j.orders:
            top = _order_top(o)
            ok = float(top is not None and top == pref)
            if o.permutation == list(range(n)):
                fwd.append(ok)
            elif o.permutation == list(range(n))[::-1]:
                rev.append(ok)
            (pref_first if o.permutation[0] == pref else pref_second).append(ok)
            if top is not None:
                first_pick.append(float(o.permutation[0] == top))
    f = bootstrap_ci(fwd, seed=seed)
    b = bootstrap_ci(rev, seed=seed)
    return {
        "forward_accuracy": f[0], "forward_lo": f[1], "forward_hi": f[2], "n_forward": len(fwd),
        "reversed_accuracy": b[0], "reversed_lo": b[1], "reversed_hi": b[2], "n_reversed": len(rev),
        "forward_minus_reversed": f[0] - b[0],
        "position_gap": _mean(pref_first) - _mean(pref_second),
        "first_position_rate": _mean(first_pick),
    }
