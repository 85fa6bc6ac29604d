"""The report's CSV files: one row per typed table row, columns in the order users read them."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from steer_away.evaluation.report.rows import TableRow


def _write(path: Path, records: Sequence[Mapping[str, object]]) -> None:
    if not records:
        path.unlink(missing_ok=True)  # a file from an earlier report of the same folder would mislead
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        # rows may differ (the baseline has no Δ interval): the header is every column in first-seen order
        fields = list(dict.fromkeys(key for record in records for key in record))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def write_csv(path: Path, rows: Sequence[TableRow]) -> None:
    """Nothing is written for no rows (and an older file of that name is removed)."""
    _write(path, [row.columns() for row in rows])

