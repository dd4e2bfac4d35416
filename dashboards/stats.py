"""The paired comparison every study's verdict uses: two methods on the same seeds. Pure pandas."""

from __future__ import annotations

import math

import pandas as pd


def paired_verdict(method: str, other: str, a: pd.Series, b: pd.Series, fmt: str = "+.3f") -> str:
    """One line: ``method`` against ``other`` from their per-seed scores ``a`` and ``b`` (indexed by seed).

    "BEATS" / "LOSES TO" only when the 95% confidence interval of the mean paired difference (Student's t with
    n - 1 degrees of freedom: 4.30 standard errors for 3 seeds, 2.78 for 5) excludes zero; otherwise the
    difference is within the seed noise and the line says so. With fewer than two seeds in common there is no
    interval, and the line asks for more seeds.
    """
    d = (a - b).dropna()
    if d.empty:
        return f"{method} vs {other}: no seeds in common"
    if len(d) < 2:
        return (f"{method} vs {other}: {d.mean():{fmt}} on the one seed in common; "
                "run at least 3 seeds to tell a difference from noise")
    from scipy.stats import t

    half = float(t.ppf(0.975, len(d) - 1)) * d.std(ddof=1) / math.sqrt(len(d))
    if d.mean() - half > 0:
        word = "BEATS"
    elif d.mean() + half < 0:
        word = "LOSES TO"
    else:
        word = "does not beat (within noise)" if d.mean() <= 0 else "is ahead of, but not clearly,"
    return (f"{method} {word} {other}: mean paired difference {d.mean():{fmt}} (95% interval +/-{half:.3f}), "
            f"higher on {int((d > 0).sum())} of {len(d)} seeds")
