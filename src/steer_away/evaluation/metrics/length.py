"""Answer length: a method that lowers toxicity by saying less (or that loops to the token limit) shows here."""

from __future__ import annotations

import math

from steer_away.evaluation.metrics.base import AnswerMetric, MetricContext, MetricFigures, fmt
from steer_away.evaluation.store import AnswerRecord


class AnswerLength(AnswerMetric):
    """Tokens per answer, and the change against unsteered on the same rows with its interval."""

    name = "tokens"
    header = "tokens: mean / Δ [95% CI]"
    short_header = "Δ tokens"
    paired = True

    def value(self, answer: AnswerRecord, context: MetricContext) -> float:
        return float(answer.n_tokens)

    def cell(self, f: MetricFigures, steered: bool) -> str:
        if not steered or not math.isfinite(f.change) or f.change_interval is None:
            return f"{fmt(f.value, '.1f')} / -"
        low, high = f.change_interval
        mark = " *" if high < 0 or low > 0 else ""
        return f"{fmt(f.value, '.1f')} / {f.change:+.1f} [{low:+.1f}, {high:+.1f}]{mark}"

    def short_cell(self, f: MetricFigures, steered: bool) -> str:
        return "-" if not steered or not math.isfinite(f.change) else f"{f.change:+.1f}"
