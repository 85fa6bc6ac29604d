"""One cell of a sweep: a method with one set of arguments, evaluated on every (user, prompt) row.

The evaluation context (model, scorer, profiles, rows, MMLU questions, steering resources) is
rebuilt identically from the config on any worker. A cell's key hashes the method's full argument
dataclass together with the context's fingerprint (model, rows, questions, data and vector files),
so no argument can change without the cell being computed again.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steer_away.data.categories import CategoryRule
from steer_away.data.prism import load_prism
from steer_away.data.prompts import PromptSplit
from steer_away.evaluation.metrics import finite, mean_by, toxicity_distance, wilson_interval
from steer_away.evaluation.mmlu import MMLUQuestion, content_digest, load_mmlu, mmlu_predictions
from steer_away.evaluation.perplexity import answer_perplexities
from steer_away.evaluation.store import AnswerRecord, MMLURecord
from steer_away.evaluation.summary import CellSummary
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel, load_model
from steer_away.profiles import load_profiles, pick_users
from steer_away.scoring import make_scorer
from steer_away.steering.base import MethodArgs, RowSteering, SteeringMethod
from steer_away.steering.registry import build_method, get_method
from steer_away.steering.resources import SteeringResources


@dataclass(frozen=True)
class EvalRow:
    row_id: str
    user_id: str
    prompt_id: str
    prompt: str
    category: str


@dataclass(frozen=True)
class Cell:
    key: str
    method: str
    args: MethodArgs

    @property
    def label(self) -> str:
        return get_method(self.method).label(self.args)

    @property
    def alpha(self) -> float | None:
        """The method's strength α in this cell (None: the method has none, or picks it per row)."""
        value = self.args.strength_value()
        return None if value is None else float(value)

    @property
    def settings(self) -> str:
        """The non-default arguments other than α, as shown in a report's 'settings' column."""
        return self.args.settings()


def cell_key(method: str, args: MethodArgs, fingerprint: str) -> str:
    ident = {"method": method, "args": args.identity(), "fingerprint": fingerprint}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.is_file() else "none"


class EvalContext:
    def __init__(self, config: SweepConfig, lm: LanguageModel | None = None) -> None:
        self.config = config
        run = config.run_dir
        self.lm = lm or load_model(config.model, device=config.device)
        self.scorer = make_scorer(config.scorer, cache_path=run / "scores.sqlite")
        self.profiles = load_profiles(run / "profiles.json")
        data = load_prism(config.prism)
        self.data = data
        _, self.heldout_pairs = PromptSplit(holdout=config.holdout, seed=config.seed,
                                            min_margin=config.min_margin).pairs(data.turns)
        self.sensitivity = {u: p.sensitivity for u, p in self.profiles.items()}
        self.users = self._pick_users()
        self.rows = self._pick_rows(CategoryRule.from_file(config.prompt_categories))
        self.mmlu = self._load_mmlu()
        self.resources = SteeringResources(self.lm, profiles=self.profiles, vectors=run / "vectors",
                                           categories=config.steering_categories)
        self.fingerprint = hashlib.sha1(json.dumps({
            "model": self.lm.model_id, "rows": [r.row_id for r in self.rows], "mmlu": content_digest(self.mmlu),
            "max_new_tokens": config.max_new_tokens, "scorer": self.scorer.backend,
            "profiles": _file_digest(run / "profiles.json"),
            "vectors": _file_digest(run / "vectors" / "pair_activations.safetensors"),
            "steering_categories": _file_digest(Path(config.steering_categories)) if config.steering_categories else "",
        }, sort_keys=True).encode()).hexdigest()[:12]

    def _pick_users(self) -> list[str]:
        return pick_users(self.profiles, self.config.users_per_sensitivity)

    def _pick_rows(self, rule: CategoryRule) -> list[EvalRow]:
        """Every evaluation user answers the same prompts: turn-0 prompts of held-out conversations,
        `prompts_per_category` from each category."""
        heldout = {p.conversation_id for p in self.heldout_pairs}
        by_category: dict[str, dict[str, str]] = {}
        for turn in self.data.turns:
            if turn.turn != 0 or turn.conversation_id not in heldout:
                continue
            category = rule.categorise(turn.prompt, turn.conversation_type, conversation_id=turn.conversation_id)
            prompt_id = hashlib.sha1(turn.prompt.encode()).hexdigest()[:10]
            by_category.setdefault(category, {})[prompt_id] = turn.prompt
        rng = random.Random(self.config.seed)
        rows = []
        for category, prompts in sorted(by_category.items()):
            ids = sorted(prompts)
            for prompt_id in sorted(rng.sample(ids, min(self.config.prompts_per_category, len(ids)))):
                for user in self.users:
                    rows.append(EvalRow(f"{user}|{prompt_id}", user, prompt_id, prompts[prompt_id], category))
        return rows

    def _load_mmlu(self) -> list[MMLUQuestion]:
        source = self.config.mmlu
        if source in (None, "none"):
            return []
        return load_mmlu(None if source == "fixture" else source, subjects=self.config.mmlu_subjects,
                         limit=self.config.mmlu_limit)

    def method(self, cell: Cell) -> SteeringMethod:
        return build_method(cell.method, cell.args, self.resources)

    def cells(self) -> list[Cell]:
        out = []
        for index, grid in enumerate(self.config.methods):
            for args in grid.expand(f"methods[{index}]"):
                out.append(Cell(cell_key(grid.name, args, self.fingerprint), grid.name, args))
        return out


Batch = tuple[list[AnswerRecord], list[MMLURecord]]


def compute_cell(ctx: EvalContext, cell: Cell, done_rows: set[str], done_questions: set[str],
                 progress: Callable[[int], Any] | None = None) -> Iterator[Batch]:
    """Yield (answers, mmlu) batches for what is not done yet; the caller stores each at once."""
    method = ctx.method(cell)
    config = GenerationConfig(max_new_tokens=ctx.config.max_new_tokens)
    todo = [r for r in ctx.rows if r.row_id not in done_rows]
    # Methods that steer everyone alike answer each prompt once; the answer serves every user.
    units: list[tuple[str, str | None, list[EvalRow]]]
    if method.personalised:
        units = [(r.prompt, r.user_id, [r]) for r in todo]
    else:
        grouped: dict[str, list[EvalRow]] = {}
        for r in todo:
            grouped.setdefault(r.prompt, []).append(r)
        units = [(prompt, None, rows) for prompt, rows in grouped.items()]
    size = ctx.config.batch_size
    for start in range(0, len(units), size):
        chunk = units[start:start + size]
        steer = [RowSteering(user) for _, user, _ in chunk]
        outs = generate(ctx.lm, [p for p, _, _ in chunk], method=method, rows=steer, config=config)
        texts = [o.text for o in outs]
        tox = ctx.scorer.score(texts)
        ppl = answer_perplexities(ctx.lm, [p for p, _, _ in chunk], texts, batch_size=size)
        records = []
        for (prompt, _, rows), out, t, p in zip(chunk, outs, tox, ppl):
            for row in rows:
                preferred = np.asarray(ctx.profiles[row.user_id].preferred_toxicity)
                records.append(AnswerRecord(row.row_id, row.user_id, row.prompt_id, row.category, prompt, out.text,
                                            t.tolist(), float(toxicity_distance(t, preferred)[0]), p,
                                            len(out.token_ids)))
        yield records, []
        if progress:
            progress(len(records))
    questions = [q for q in ctx.mmlu if q.question_id not in done_questions]
    users: list[str | None] = list(ctx.users) or [None]
    for start in range(0, len(questions), size * 2):
        qchunk = questions[start:start + size * 2]
        owners = [users[(start + i) % len(users)] for i in range(len(qchunk))]
        predicted = mmlu_predictions(ctx.lm, qchunk, method, [RowSteering(u) for u in owners], batch_size=size * 2)
        yield [], [MMLURecord(q.question_id, u or "", p.predicted, p.predicted == q.answer, p.letter_mass)
                   for q, u, p in zip(qchunk, owners, predicted)]
        if progress:
            progress(len(qchunk))


def tox_distances(answers: list[AnswerRecord], preferred: dict[str, float]) -> list[float]:
    """|TOXICITY of the answer − the user's preferred TOXICITY|: the headline distance (the seeds' metric);
    the six-attribute mean (`attribute_mae`) is kept beside it."""
    return [abs(a.toxicity[0] - preferred[a.user_id]) if a.user_id in preferred else float("nan") for a in answers]


def summarise(answers: list[AnswerRecord], mmlu: list[MMLURecord],
              sensitivity: dict[str, str] | None = None, preferred: dict[str, float] | None = None) -> CellSummary:
    """Cell figures; `sensitivity` (user -> strict/moderate/tolerant) adds the per-group breakdown,
    `preferred` (user -> preferred TOXICITY) the TOXICITY distance."""
    distances = [a.attribute_mae for a in answers]
    groups = [(sensitivity or {}).get(a.user_id, "unknown") for a in answers]
    answered = {a.user_id for a in answers}
    preferred = {u: v for u, v in (preferred or {}).items() if u in answered}
    tox = tox_distances(answers, preferred)
    ppl = finite(a.perplexity for a in answers)
    correct = sum(r.correct for r in mmlu)
    low, high = wilson_interval(correct, len(mmlu))
    users = {a.user_id for a in answers}
    return CellSummary(
        n=len(answers), users=len(users),
        mae=float(np.mean(distances)) if distances else float("nan"),
        mae_by_category=mean_by(distances, [a.category for a in answers]),
        mae_by_sensitivity=mean_by(distances, groups),
        tox_dist=float(np.nanmean(tox)) if preferred and answers else float("nan"),
        tox_dist_by_category=mean_by(tox, [a.category for a in answers]) if preferred else {},
        tox_dist_by_sensitivity=mean_by(tox, groups) if preferred else {},
        preferred_toxicity=preferred,
        sensitivity_of={u: g for u, g in (sensitivity or {}).items() if u in answered},
        toxicity_by_sensitivity=mean_by([a.toxicity[0] for a in answers], groups),
        ppl_mean=float(ppl.mean()) if ppl.size else float("nan"),
        ppl_median=float(np.median(ppl)) if ppl.size else float("nan"),
        empty_answers=sum(1 for a in answers if not a.answer.strip()),
        mean_tokens=float(np.mean([a.n_tokens for a in answers])) if answers else 0.0,
        toxicity_mean=float(np.mean([a.toxicity[0] for a in answers])) if answers else float("nan"),
        mmlu_n=len(mmlu), mmlu_acc=correct / len(mmlu) if mmlu else float("nan"),
        mmlu_ci=(low, high),
        mmlu_letter_mass=float(np.nanmean([r.letter_mass for r in mmlu])) if mmlu else float("nan"),
    )
