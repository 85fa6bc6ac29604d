"""The report's CSV files: one row per typed table row, columns in the order users read them."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from steer_away.evaluation.summary import TableRow


def _write(path: Path, records: Sequence[Mapping[str, object]]) -> None:
    if not records:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        # rows may differ (the baseline has no Δ interval): the header is every column in first-seen order
        fields = list(dict.fromkeys(key for record in records for key in record))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def write_csv(path: Path, rows: Sequence[TableRow]) -> None:
    """Nothing is written for no rows."""
    _write(path, [row.columns() for row in rows])


def write_ppa_csv(path: Path, ppa: Mapping[str, float]) -> None:
    """One (predictor, value) line per PPA figure, the pair count and tie share included."""
    _write(path, [{"predictor": k, "value": v} for k, v in ppa.items()])
