"""One cell of a sweep: a method with one set of arguments, evaluated on every (user, prompt) row.

The evaluation context (model, scorer, profiles, rows, MMLU questions, steering resources) is
rebuilt identically from the config on any worker. A cell's key hashes the method's full argument
dataclass together with the context's fingerprint (model, rows, questions, data and vector files),
so no argument can change without the cell being computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steer_away.chat import render_chat, token_count
from steer_away.data.categories import CategoryRule
from steer_away.data.prism import load_prism
from steer_away.data.prompts import (
    HELDOUT,
    EvalPrompt,
    PromptSplit,
    checked_prompts,
    pick_per_category,
    prompt_id,
)
from steer_away.decoding.scoring import answer_scores
from steer_away.evaluation.metrics.functions import toxicity_distance
from steer_away.evaluation.store import AnswerRecord, MMLURecord
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.evaluation.utility.formats import utility_digest, utility_predictions
from steer_away.evaluation.utility.mmlu import MMLUQuestion, load_mmlu
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel, load_model
from steer_away.profiles import load_profiles, pick_users
from steer_away.resources import steering_categories_path
from steer_away.scoring import make_scorer
from steer_away.steering.framework.arguments import MethodArgs
from steer_away.steering.framework.method import RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method, get_method
from steer_away.steering.vectors.bank import bank_files

log = logging.getLogger(__name__)


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
        self.training_pairs, self.heldout_pairs = PromptSplit(holdout=config.holdout, seed=config.seed,
                                                              min_margin=config.min_margin).pairs(data.turns)
        self.sensitivity = {u: p.sensitivity for u, p in self.profiles.items()}
        self.users = self._pick_users()
        self.rows = self._pick_rows(CategoryRule.from_file(config.prompt_categories))
        self.mmlu = self._load_mmlu()
        self._warm = False
        self._warned: set[str] = set()  # cells whose users without a vector were reported
        self.resources = SteeringResources(self.lm, profiles=self.profiles, vectors=run / "vectors",
                                           categories=config.steering_categories, scorer=self.scorer)
        self.fingerprint = hashlib.sha1(json.dumps({
            "model": self.lm.model_id, "rows": [r.row_id for r in self.rows],
            "prompts": hashlib.sha1(json.dumps(sorted({(r.prompt_id, r.prompt, r.category) for r in self.rows}))
                                    .encode()).hexdigest()[:12],
            "mmlu": utility_digest(config.utility, self.mmlu),
            "max_new_tokens": config.max_new_tokens, "scorer": self.scorer.backend,
            "profiles": _file_digest(run / "profiles.json"),
            "vectors": _file_digest(run / "vectors" / "pair_activations.safetensors"),
            "steering_categories": _file_digest(Path(config.steering_categories)) if config.steering_categories else "",
        }, sort_keys=True).encode()).hexdigest()[:12]

    def warm_up(self) -> None:
        """One untimed batch of full-length answers of the size cells run, and one row, before the first
        timed answer: one-time costs (memory for batch-sized caches, the CPU decode step's weight
        copies, first-call kernel set-up) are then charged to no cell's generation time. Measured on
        2 cores: without it the first cell's 60 answers took 9.2 s, the same call again 8.6 s."""
        if not self._warm and self.rows:
            prompts = list(dict.fromkeys(r.prompt for r in self.rows))[:self.config.batch_size]
            for batch in (prompts, prompts[:1]):
                generate(self.lm, batch, config=GenerationConfig(max_new_tokens=self.config.max_new_tokens,
                                                                 stop_on_eos=False))
        self._warm = True

    def _pick_users(self) -> list[str]:
        return pick_users(self.profiles, self.config.users_per_sensitivity)

    def _pick_rows(self, rule: CategoryRule) -> list[EvalRow]:
        """Every evaluation user answers the same prompts: `prompts_per_category` of each category."""
        chosen = pick_per_category(self._prompt_set(rule), self.config.prompts_per_category, self.config.seed)
        return [EvalRow(f"{user}|{p.prompt_id}", user, p.prompt_id, p.text, p.category)
                for p in chosen for user in self.users]

    def _prompt_set(self, rule: CategoryRule) -> list[EvalPrompt]:
        """The config's prompt source: held-out opening prompts of the data (turn 0 of conversations no
        vector was trained on), our shipped set, or a file; the last two are checked against the
        vectors' training prompts."""
        source = self.config.prompts
        if source != HELDOUT:
            return checked_prompts(source, self.training_pairs, rule)
        heldout = {p.conversation_id for p in self.heldout_pairs}
        found: dict[str, EvalPrompt] = {}
        for turn in self.data.turns:
            if turn.turn == 0 and turn.conversation_id in heldout:
                category = rule.categorise(turn.prompt, turn.conversation_type, conversation_id=turn.conversation_id)
                found.setdefault(turn.prompt, EvalPrompt(prompt_id(turn.prompt), turn.prompt, category,
                                                         conversation_type=turn.conversation_type))
        return sorted(found.values(), key=lambda p: p.prompt_id)

    def _load_mmlu(self) -> list[MMLUQuestion]:
        source = self.config.mmlu
        if source in (None, "none"):
            return []
        return load_mmlu(None if source == "fixture" else source, subjects=self.config.mmlu_subjects,
                         limit=self.config.mmlu_limit)

    def method(self, cell: Cell) -> SteeringMethod:
        method = build_method(cell.method, cell.args, self.resources)
        without = method.users_without_own(self.users)
        if without and cell.key not in self._warned:
            self._warned.add(cell.key)
            log.warning("%s: %d of %d users have no vector of their own (e.g. %r) and are steered with the "
                        "population vector", cell.label, len(without), len(self.users), without[0])
        return method

    def _bank_digest(self, kind: str) -> str:
        folder = self.config.run_dir / "vectors"
        files = bank_files(folder, kind)
        listing = [(str(f.relative_to(folder)), _file_digest(f)) for f in files]
        return hashlib.sha1(json.dumps(listing).encode()).hexdigest()[:12]

    def cells(self) -> list[Cell]:
        out = []
        # The shipped category file is read by the methods that steer by category: its digest is in their
        # keys (a config's own file is in the fingerprint, for every cell, as it always was).
        # Likewise the vector files a method steers with (a bank can change while the activations it was
        # composed from do not).
        shipped = "" if self.config.steering_categories else f":{_file_digest(steering_categories_path())}"
        banks: dict[str, str] = {}
        for index, grid in enumerate(self.config.methods):
            entry = get_method(grid.name)
            for args in grid.expand(f"methods[{index}]"):
                needs = entry.needs_of(args)
                reads = shipped if needs.categories else ""
                if needs.vector_bank is not None:
                    if needs.vector_bank not in banks:
                        banks[needs.vector_bank] = self._bank_digest(needs.vector_bank)
                    reads += f":{banks[needs.vector_bank]}"
                out.append(Cell(cell_key(grid.name, args, self.fingerprint + reads), grid.name, args))
        return out


@dataclass
class Batch:
    """What one batch of a cell adds to the store: answers or utility records, and how long its answers
    took to generate (the method's cost: decoding and any scorer calls it makes, not the evaluation)."""

    answers: list[AnswerRecord]
    mmlu: list[MMLURecord]
    generated: int = 0  # answers generated (one may serve several users)
    seconds: float = 0.0


def answer_units(method: SteeringMethod, rows: list[EvalRow]) -> list[tuple[str, str, list[EvalRow]]]:
    """(prompt, user to steer for, rows served) per answer to generate: rows the method steers alike
    (everyone, for population steering; one sensitivity group, for a method steering by group) share
    one answer to each prompt."""
    grouped: dict[tuple[str, Hashable], list[EvalRow]] = {}
    for r in rows:
        grouped.setdefault((r.prompt, method.answer_group(RowSteering(r.user_id))), []).append(r)
    return [(prompt, served[0].user_id, served) for (prompt, _), served in grouped.items()]


def by_prompt(units: list[tuple[str, str, list[EvalRow]]], size: int) -> Iterator[list[tuple[str, str, list[EvalRow]]]]:
    """Batches of about `size` answers that never split one prompt's answers (what its answers share,
    such as a reranker's candidates, is then shared within one batch); a prompt with more is one batch."""
    per_prompt: dict[str, list[tuple[str, str, list[EvalRow]]]] = {}
    for unit in units:
        per_prompt.setdefault(unit[0], []).append(unit)
    chunk: list[tuple[str, str, list[EvalRow]]] = []
    for own in per_prompt.values():
        if chunk and len(chunk) + len(own) > size:
            yield chunk
            chunk = []
        chunk += own
    if chunk:
        yield chunk


def cell_work(ctx: EvalContext, cell: Cell, done_rows: set[str], done_questions: set[str]) -> int:
    """What is left of a cell in tokens run through the model: each answer's prompt and new tokens, and
    each question with its options, times the method's branches. Only a time estimate reads it, so
    it takes mean lengths from a sample of prompts and questions."""
    method = ctx.method(cell)
    branches = method.prepare(ctx.lm, [[{"role": "user", "content": "x"}]], [RowSteering()]).num_branches
    units = answer_units(method, [r for r in ctx.rows if r.row_id not in done_rows])
    answers = len(units)
    choice = method.answer_choice() if method.capabilities.chooses_answers else None
    samples = 1.0
    if choice is not None:  # candidates are drawn once per prompt and sampler group, and shared
        drawn = {(prompt, repr(choice.sampler.answer_group(RowSteering(user)))) for prompt, user, _ in units}
        samples = choice.samples * len(drawn) / max(answers, 1)
    questions = sum(q.question_id not in done_questions for q in ctx.mmlu)

    def tokens(texts: list[str]) -> float:
        return float(np.mean([token_count(ctx.lm.tokenizer, t) for t in texts])) if texts else 0.0

    prompt = tokens([render_chat(ctx.lm.tokenizer, [{"role": "user", "content": r.prompt}]) for r in ctx.rows[:32]])
    question = tokens([render_chat(ctx.lm.tokenizer, [{"role": "user", "content": q.question}]) for q in ctx.mmlu[:32]])
    options = tokens([c for q in ctx.mmlu[:32] for c in q.choices])
    return int(branches * (samples * answers * (prompt + ctx.config.max_new_tokens)
                           + questions * (question + 4 * options)))


def compute_cell(ctx: EvalContext, cell: Cell, done_rows: set[str], done_questions: set[str],
                 progress: Callable[[int], Any] | None = None) -> Iterator[Batch]:
    """Yield (answers, mmlu) batches for what is not done yet; the caller stores each at once."""
    method = ctx.method(cell)
    ctx.warm_up()
    config = GenerationConfig(max_new_tokens=ctx.config.max_new_tokens)
    todo = [r for r in ctx.rows if r.row_id not in done_rows]
    size = ctx.config.batch_size
    for chunk in by_prompt(answer_units(method, todo), size):
        steer = [RowSteering(user) for _, user, _ in chunk]
        started = time.perf_counter()
        outs = generate(ctx.lm, [p for p, _, _ in chunk], method=method, rows=steer, config=config)
        seconds = time.perf_counter() - started
        texts = [o.text for o in outs]
        tox = ctx.scorer.score(texts)
        unscored = [i for i, o in enumerate(outs) if o.score is None]  # a guarded choice was scored while choosing
        fresh = iter(answer_scores(ctx.lm, [chunk[i][0] for i in unscored], [texts[i] for i in unscored],
                                   relevance=True, batch_size=size))
        scored = [o.score if o.score is not None else next(fresh) for o in outs]
        records = []
        for (prompt, _, rows), out, t, s in zip(chunk, outs, tox, scored):
            for row in rows:
                preferred = np.asarray(ctx.profiles[row.user_id].preferred_toxicity)
                records.append(AnswerRecord(row.row_id, row.user_id, row.prompt_id, row.category, prompt, out.text,
                                            t.tolist(), float(toxicity_distance(t, preferred)[0]), s.perplexity,
                                            len(out.token_ids), s.relevance))
        yield Batch(records, [], len(chunk), seconds)
        if progress:
            progress(len(records))
    # Questions go round the evaluation users by their place in the set, so a resumed cell gives
    # each question the owner it had.
    users: list[str | None] = list(ctx.users) or [None]
    owned = [(q, users[i % len(users)]) for i, q in enumerate(ctx.mmlu) if q.question_id not in done_questions]
    for start in range(0, len(owned), size):
        qchunk = owned[start:start + size]
        predicted = utility_predictions(ctx.config.utility, ctx.lm, [q for q, _ in qchunk], method,
                                        [RowSteering(u) for _, u in qchunk], batch_size=size)
        yield Batch([], [MMLURecord(q.question_id, u or "", p.predicted, p.predicted == q.answer, p.letter_mass)
                         for (q, u), p in zip(qchunk, predicted)])
        if progress:
            progress(len(qchunk))


def missing_relevance(ctx: EvalContext, rows: list[tuple[str, str, str]]) -> dict[str, float]:
    """Relevance of stored answers that lack it, (row id, prompt, answer) each: a store written before it was
    scored is filled in by the next sweep, without generating anything again."""
    scored = answer_scores(ctx.lm, [p for _, p, _ in rows], [a for _, _, a in rows], relevance=True,
                           batch_size=ctx.config.batch_size)
    return {row_id: s.relevance for (row_id, _, _), s in zip(rows, scored)}
