"""Calibration: over which strengths does a steering method change TOXICITY before the text breaks?

For one method (a vector, or a logit method and category) the same prompts are answered at each α
(α = 0 is the unsteered model). Per α: mean TOXICITY with a prompt-clustered 95 % interval,
distinct-2, the share of collapsed answers and the median perplexity under the unsteered model.

- usable: the share of collapsed answers is at most `max_collapsed`, distinct-2 has not dropped
  more than `max_distinct_drop` below the unsteered answers', and the median perplexity (under the
  unsteered model) is at most `max_ppl_ratio` times the unsteered answers';
- collapse onset: the smallest α that is not usable (larger α are not considered productive even if
  a later one happens to pass);
- productive window: the usable α below the onset whose change in TOXICITY against α = 0 goes the
  asked way with a paired interval (prompts resampled) that excludes zero; the recommended α is the
  smallest one in the window reaching 90 % of the window's largest effect (gentler steering that
  does nearly as much).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from steer_away.decoding.scoring import answer_scores
from steer_away.errors import InputError
from steer_away.evaluation.metrics.functions import distinct_n, is_collapsed, prompt_bootstrap
from steer_away.files import write_atomically
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel
from steer_away.scoring.base import ToxicityScorer
from steer_away.steering.framework.arguments import RowOverrideError
from steer_away.steering.framework.method import RowSteering, SteeringMethod

DIRECTIONS = ("lower", "higher")


@dataclass(frozen=True)
class CalibrationPoint:
    alpha: float
    toxicity: float
    toxicity_ci: tuple[float, float]
    distinct2: float
    collapsed_share: float
    perplexity: float
    usable: bool
    sample: str  # one answer, to read beside the numbers
    change: float = 0.0  # mean TOXICITY minus α = 0's on the same prompts
    change_ci: tuple[float, float] = (0.0, 0.0)  # paired, prompts resampled


@dataclass
class Calibration:
    method: str
    target: str  # whose steering: a user id, a category, or "everyone"
    direction: str
    points: list[CalibrationPoint]
    max_collapsed: float
    max_distinct_drop: float
    prompts: list[str] = field(default_factory=list)
    max_ppl_ratio: float = 2.0

    @property
    def baseline(self) -> CalibrationPoint:
        return self.points[0]

    def effect(self, point: CalibrationPoint) -> float:
        """How far TOXICITY moved in the asked direction against α = 0 (positive = the wanted way)."""
        change = point.toxicity - self.baseline.toxicity
        return -change if self.direction == "lower" else change

    @property
    def collapse_onset(self) -> float | None:
        return next((p.alpha for p in self.points[1:] if not p.usable), None)

    def significant(self, point: CalibrationPoint) -> bool:
        """The change goes the asked way and its paired interval excludes zero."""
        low, high = point.change_ci
        return high < 0 if self.direction == "lower" else low > 0

    @property
    def window(self) -> list[CalibrationPoint]:
        onset = self.collapse_onset
        return [p for p in self.points[1:] if (onset is None or p.alpha < onset) and self.significant(p)]

    @property
    def recommended(self) -> float | None:
        window = self.window
        if not window:
            return None
        best = max(self.effect(p) for p in window)
        return min(p.alpha for p in window if self.effect(p) >= 0.9 * best)

    def summary(self) -> str:
        window = self.window
        onset = self.collapse_onset
        chosen = next((p for p in window if p.alpha == self.recommended), None)
        text = (f"{self.method} for {self.target}: " +
                (f"productive α {', '.join(f'{p.alpha:g}' for p in window)}, recommended α {chosen.alpha:g} "
                 f"(TOXICITY {self.baseline.toxicity:.3f} → {chosen.toxicity:.3f}, change {chosen.change:+.3f} "
                 f"[{chosen.change_ci[0]:+.3f}, {chosen.change_ci[1]:+.3f}])"
                 if chosen is not None else
                 f"no α moved TOXICITY {self.direction} (paired interval excluding 0) before the text broke"))
        return text + (f"; collapse from α {onset:g}" if onset is not None else "; no collapse in the tested range")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "collapse_onset": self.collapse_onset, "recommended": self.recommended,
                "window": [p.alpha for p in self.window], "summary": self.summary()}


def calibrate(lm: LanguageModel, method: SteeringMethod, prompts: Sequence[str], alphas: Sequence[float],
              scorer: ToxicityScorer, *, name: str, user: str | None = None, category: str | None = None,
              direction: str = "lower", max_new_tokens: int = 40, batch_size: int = 8,
              max_collapsed: float = 0.1, max_distinct_drop: float = 0.1, max_ppl_ratio: float = 2.0
              ) -> Calibration:
    """Answer `prompts` at α = 0 and at each of `alphas` (one batched pass per chunk, α per row)."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not prompts:
        raise InputError("calibration needs at least one prompt")
    try:
        overrides = method.read_overrides({"category": category} if category is not None else {})
    except RowOverrideError as err:
        raise RowOverrideError(err.key, f"--category: {err}") from None
    levels = [0.0, *sorted({float(a) for a in alphas if float(a) != 0.0})]
    jobs = [(a, p) for a in levels for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    texts: list[str] = []
    with tqdm(total=len(jobs), desc="calibrating", unit="answer") as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            rows = [RowSteering(user, alpha=a, overrides=overrides) for a, _ in chunk]
            outs = generate(lm, [p for _, p in chunk], method=method, rows=rows, config=config)
            texts += [o.text for o in outs]
            bar.update(len(chunk))
    toxicity = scorer.score(texts)[:, 0]
    ppl = np.asarray([s.perplexity for s in answer_scores(lm, [p for _, p in jobs], texts, batch_size=batch_size)],
                     dtype=float)
    points = []
    base_d2 = base_ppl = float("nan")
    n = len(prompts)
    for index, alpha in enumerate(levels):
        sl = slice(index * n, (index + 1) * n)
        answers = texts[sl]
        d2 = [v for v in (distinct_n(a, 2) for a in answers) if not math.isnan(v)]
        distinct = float(np.mean(d2)) if d2 else float("nan")
        finite = ppl[sl][np.isfinite(ppl[sl])]
        median_ppl = float(np.median(finite)) if finite.size else float("nan")
        if index == 0:
            base_d2, base_ppl = distinct, median_ppl
        collapsed = sum(is_collapsed(a) for a in answers) / n
        usable = (collapsed <= max_collapsed and math.isfinite(distinct) and not distinct < base_d2 - max_distinct_drop
                  and not median_ppl > max_ppl_ratio * base_ppl)
        tox = toxicity[sl]
        ci = prompt_bootstrap(tox)
        base_tox = toxicity[:n]
        change = float(tox.mean() - base_tox.mean())
        change_ci = prompt_bootstrap(tox, baseline=base_tox) if index else (change, change)
        points.append(CalibrationPoint(alpha, float(tox.mean()), (float(ci[0]), float(ci[1])), distinct, collapsed,
                                       median_ppl, usable, answers[int(np.argmax(tox))], change,
                                       (float(change_ci[0]), float(change_ci[1]))))
    target = user or category or "everyone"
    return Calibration(name, target, direction, points, max_collapsed, max_distinct_drop, list(prompts),
                       max_ppl_ratio)


def save_calibration(calibration: Calibration, out: str | Path) -> list[Path]:
    """calibration.json and calibration.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(calibration.to_dict(), indent=1, ensure_ascii=False)
    path = write_atomically(out / "calibration.json", "calibration", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return [path, plot_calibration(calibration, out / "calibration.png")]


def plot_calibration(calibration: Calibration, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = calibration.points
    alphas = [p.alpha for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), dpi=120, sharex=True)
    top.plot(alphas, [p.toxicity for p in points], marker="o", color="tab:red", label="mean TOXICITY")
    top.fill_between(alphas, [p.toxicity_ci[0] for p in points], [p.toxicity_ci[1] for p in points],
                     color="tab:red", alpha=0.15, label="95 % CI (prompts resampled)")
    top.axhline(calibration.baseline.toxicity, color="grey", linestyle="--", linewidth=1, label="α = 0")
    bottom.plot(alphas, [p.distinct2 for p in points], marker="s", color="tab:blue", label="distinct-2")
    bottom.plot(alphas, [p.collapsed_share for p in points], marker="x", color="tab:purple",
                label="collapsed share")
    bottom.axhline(calibration.max_collapsed, color="tab:purple", linestyle=":", linewidth=1)
    window = calibration.window
    for ax in (top, bottom):
        for p in window:
            ax.axvline(p.alpha, color="tab:green", alpha=0.35, linewidth=6)
        onset = calibration.collapse_onset
        if onset is not None:
            ax.axvline(onset, color="black", linestyle="-.", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    top.set_ylabel("TOXICITY")
    bottom.set_ylabel("quality")
    bottom.set_xlabel("α")
    title = textwrap.fill(calibration.summary(), 95)
    top.set_title(f"{title}\n(green: productive α, dash-dot: collapse onset)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
