"""The paired comparison every study's verdict uses: two methods on the same seeds. Pure pandas.

:func:`paired_verdict` judges one method against one other; :func:`against_strongest` first names the strongest
other method of the experiment (the best mean over its seeds) and judges the method against it, so no verdict can
be won by picking a weak baseline. The strongest is chosen on the same scores the verdict reads (the held-out test
scores, in every study): that choice favours the baseline, never the method judged, and tunes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

__all__ = ["against_strongest", "paired_verdict", "strongest"]


def paired_verdict(method: str, other: str, a: pd.Series, b: pd.Series, fmt: str = "+.3f",
                   higher_better: bool = True) -> str:
    """One line: ``method`` against ``other`` from their per-seed scores ``a`` and ``b`` (indexed by seed).

    "BEATS" / "LOSES TO" only when the 95% confidence interval of the mean paired difference (Student's t with
    n - 1 degrees of freedom: 4.30 standard errors for 3 seeds, 2.78 for 5) excludes zero; otherwise the
    difference is within the seed noise and the line says so. With fewer than two seeds in common there is no
    interval, and the line asks for more seeds. ``higher_better=False`` (a loss, an error): a negative difference
    is the better one; the line still prints ``a - b``.
    """
    d = (a - b).dropna()
    if d.empty:
        return f"{method} vs {other}: no seeds in common"
    sign = 1.0 if higher_better else -1.0
    better = int((sign * d > 0).sum())
    word_better = "higher" if higher_better else "lower"
    if len(d) < 2:
        return (f"{method} vs {other}: {d.mean():{fmt}} on the one seed in common; "
                "run at least 3 seeds to tell a difference from noise")
    from scipy.stats import t

    half = float(t.ppf(0.975, len(d) - 1)) * d.std(ddof=1) / math.sqrt(len(d))
    gain = sign * d.mean()
    if gain - half > 0:
        word = "BEATS"
    elif gain + half < 0:
        word = "LOSES TO"
    else:
        word = "does not beat (within noise)" if gain <= 0 else "is ahead of, but not clearly,"
    return (f"{method} {word} {other}: mean paired difference {d.mean():{fmt}} (95% interval +/-{half:.3f}), "
            f"{word_better} on {better} of {len(d)} seeds")


def strongest(scores: Mapping[str, pd.Series], method: str, exclude: Iterable[str] = (),
              higher_better: bool = True) -> str | None:
    """The other method with the best mean score, or None when there is none.

    ``scores`` maps each method to its per-seed scores; ``method`` itself and ``exclude`` (references such as
    active learning's ``all``, or the method's own variants) are left out, and so is a method without a finite
    score. Ties keep the first in ``scores``' order.
    """
    skip = {method, *exclude}
    means = {m: float(s.mean()) for m, s in scores.items()
             if m not in skip and s.notna().any() and math.isfinite(float(s.mean()))}
    if not means:
        return None
    pick = max if higher_better else min
    return pick(means, key=lambda m: means[m])


def against_strongest(method: str, scores: Mapping[str, pd.Series], what: str, exclude: Iterable[str] = (),
                      fmt: str = "+.3f", higher_better: bool = True) -> str:
    """``method`` against the strongest other method on ``what`` (for example "test Dice"), paired by seed.

    One line naming the strongest method and both means, then :func:`paired_verdict`; a line saying there is no
    baseline when every other method is excluded or has no score.
    """
    mine = scores.get(method, pd.Series(dtype=float))
    best = strongest(scores, method, exclude, higher_better)
    if best is None:
        return f"{method}: no other method with a {what} to compare with"
    return (f"against the strongest other method on {what}, {best} ({what} {scores[best].mean():.3f} vs "
            f"{mine.mean():.3f}): " + paired_verdict(method, best, mine, scores[best], fmt, higher_better))
