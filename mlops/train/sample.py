"""The search's sample of a large training set, drawn in Spark before anything reaches the driver.

A training set of more than ``train.max_rows`` labelled rows is sampled per label: each label keeps
``round(fraction * its rows)`` rows with ``fraction = max_rows / rows``, so the sample's positive
rate is the full set's (to one row per label). Which rows: the ones with the smallest hash of
``(device_id, event_time, seed)``, so the sample depends on the data and the seed only, not on
Spark's partitioning, task order or the number of executors, and every device and every stretch of
event time is thinned alike. The time split that follows (:func:`mlops.train.split.time_split`)
therefore still cuts the same event time and its gap still keeps the validation period's failures
out of training; each device's sampled readings stay in time order, and their features were
computed on the device's whole history before sampling (a sampled row's features are exact).

Rows are chosen in two steps: a filter on the hash's unit value keeps a little more than each
label's share (a margin of a few standard deviations), then a rank by hash within each label trims
that to the exact count. Only the trimmed rows are joined with their features and collected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["HASH_COLUMNS", "Sample", "stratified_sample"]

HASH_COLUMNS = ("device_id", "event_time")
"""What identifies a labelled row: the sample's hash is taken over these and the seed."""

_UNIT = 2**53  # the hash's unit value: a long mapped onto [0, 1) with a double's full precision
_MARGIN_SIGMAS = 6.0


@dataclass(frozen=True)
class Sample:
    """How the search's rows were drawn from the full training set (all of it when ``fraction`` is 1)."""

    full_rows: int
    full_positives: int
    fraction: float
    """Share of each label's rows kept (``max_rows / full_rows``; 1.0: not sampled)."""
    seed: int
    max_rows: int
    target: dict[int, int]
    """Rows kept per label value."""

    @property
    def sampled(self) -> bool:
        return self.fraction < 1.0

    def params(self, rows: int) -> dict[str, str]:
        """MLflow params of the run; ``rows``: the rows the search got."""
        return {"training_set.rows": str(self.full_rows), "training_set.positives": str(self.full_positives),
                "training_set.sampled_rows": str(rows), "training_set.max_rows": str(self.max_rows),
                "training_set.sample_fraction": repr(self.fraction), "training_set.sample_seed": str(self.seed)}

    def tags(self) -> dict[str, str]:
        """Lineage tags (run and model version): the sample's parameters, next to the sample's own rows/digest."""
        return {"lineage.sample.full_rows": str(self.full_rows),
                "lineage.sample.full_positives": str(self.full_positives),
                "lineage.sample.fraction": repr(self.fraction), "lineage.sample.seed": str(self.seed),
                "lineage.sample.max_rows": str(self.max_rows),
                "lineage.sample.method": ("stratified by label, smallest xxhash64(device_id, event_time, seed)"
                                          if self.sampled else "none: every row")}


def _with_margin(keep: int, rows: int) -> float:
    """The filter's fraction for a label that keeps ``keep`` of ``rows``: its share plus a margin, so the
    filter lets at least ``keep`` rows through except with a vanishing probability (then fewer are kept)."""
    share = keep / rows
    spread = math.sqrt(rows * share * (1 - share))
    return min(1.0, (keep + _MARGIN_SIGMAS * spread + 10) / rows)


def stratified_sample(rows: DataFrame, max_rows: int, seed: int, label: str = "label") -> tuple[DataFrame, Sample]:
    """At most about ``max_rows`` of ``rows`` (device_id, event_time, ``label``, any columns), per label.

    ``rows`` is read twice (its counts per label, then the sample): persist it when it is expensive.
    Fewer rows than ``max_rows``: ``rows`` itself, unchanged. The result has ``rows``' columns.
    """
    from pyspark.sql import Window  # heavy
    from pyspark.sql import functions as F

    counts = {int(r[label]): int(r["count"]) for r in rows.groupBy(label).count().collect()}
    total = sum(counts.values())
    positives = counts.get(1, 0)
    if total <= max_rows:
        return rows, Sample(total, positives, 1.0, seed, max_rows, dict(counts))
    fraction = max_rows / total
    target = {value: round(n * fraction) for value, n in sorted(counts.items())}
    unit = F.pmod(F.xxhash64(*(F.col(c) for c in HASH_COLUMNS), F.lit(seed)), F.lit(_UNIT)) / F.lit(float(_UNIT))
    keep_below = F.lit(0.0)
    keep_count = F.lit(0)
    for value, n in counts.items():
        keep_below = F.when(F.col(label) == value, F.lit(_with_margin(target[value], n))).otherwise(keep_below)
        keep_count = F.when(F.col(label) == value, F.lit(target[value])).otherwise(keep_count)
    rank = Window.partitionBy(label).orderBy("_unit", *HASH_COLUMNS)
    sampled = (rows.withColumn("_unit", unit).where(F.col("_unit") < keep_below)
               .withColumn("_rank", F.row_number().over(rank)).where(F.col("_rank") <= keep_count)
               .select(*rows.columns))
    return sampled, Sample(total, positives, fraction, seed, max_rows, target)
