"""PRISM alignment data: validated records (preference pairs and splits are in `pairs.py`).

PRISM (`HannahRoseKirk/prism-alignment`) has a `survey` (one row per user, with stated preferences)
and `conversations` (each turn's user message and several rated model responses). Every record is
checked; a malformed one is reported by file, record id and field, then skipped: a load never fails
silently and never fails whole because of one bad row.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from steer_away.data.standin import standin_dir
from steer_away.errors import one_line
from steer_away.files import lone_surrogate_field
from steer_away.resources import prism_fixture_dir

HUB_ID = "HannahRoseKirk/prism-alignment"
MAX_TEXT_CHARS = 50_000  # one message; PRISM's longest are a few thousand characters
MAX_RECORD_CHARS = 2_000_000  # one JSONL line (a whole conversation)
CONVERSATION_TYPES = ("unguided", "values guided", "controversy guided")


@dataclass(frozen=True)
class LoadIssue:
    source: str
    record_id: str
    field: str
    problem: str

    def __str__(self) -> str:
        return one_line(f"{self.source} record {self.record_id}: field '{self.field}' {self.problem}")


@dataclass
class LoadReport:
    """What a load kept and what it skipped, with reasons."""

    loaded: Counter = field(default_factory=Counter)
    issues: list[LoadIssue] = field(default_factory=list)

    def skip(self, source: str, record_id: object, field_name: str, problem: str) -> None:
        self.issues.append(LoadIssue(source, str(record_id), field_name, problem))

    @property
    def skipped(self) -> int:
        return len(self.issues)

    def reasons(self) -> Counter:
        return Counter(f"{i.field}: {i.problem}" for i in self.issues)

    def summary(self) -> str:
        kept = ", ".join(f"{n} {kind}" for kind, n in sorted(self.loaded.items()))
        text = f"loaded {kept or 'nothing'}; skipped {self.skipped}"
        if self.issues:
            text += " (" + "; ".join(f"{n}× {r}" for r, n in self.reasons().most_common()) + ")"
        return text


@dataclass(frozen=True)
class SurveyRecord:
    user_id: str
    stated_safety: float | None  # 1-100: how much the user said safety matters to them
    demographics: dict[str, object]


@dataclass(frozen=True)
class RatedResponse:
    text: str
    model_name: str
    score: float  # 1-100
    chosen: bool
    within_turn_id: int


@dataclass(frozen=True)
class RatedTurn:
    conversation_id: str
    user_id: str
    conversation_type: str
    turn: int
    history: tuple[tuple[str, str], ...]  # (role, text) of earlier turns, chosen answers only
    prompt: str
    responses: tuple[RatedResponse, ...]

    @property
    def opening(self) -> str:
        """The conversation's first user message: what a split by prompt holds out."""
        return self.history[0][1] if self.history else self.prompt


@dataclass
class PrismData:
    survey: dict[str, SurveyRecord]
    turns: list[RatedTurn]
    report: LoadReport


# --- reading -----------------------------------------------------------------------------------


def _read_jsonl(path: Path, report: LoadReport) -> Iterator[dict]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:  # line by line: one record of bad bytes is skipped, not the file
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.skip(path.name, f"line {line_no}", "<json>", f"is not UTF-8 text ({err.reason} at byte "
                                                                  f"{err.start})")
                continue
            if not line.strip():
                continue
            if len(line) > MAX_RECORD_CHARS:
                report.skip(path.name, f"line {line_no}", "<json>",
                            f"is {len(line)} characters; a record may have at most {MAX_RECORD_CHARS}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                report.skip(path.name, f"line {line_no}", "<json>", f"is not valid JSON ({err.msg})")
                continue
            except RecursionError:
                report.skip(path.name, f"line {line_no}", "<json>", "is nested too deeply")
                continue
            if not isinstance(record, dict):
                report.skip(path.name, f"line {line_no}", "<json>", "is not an object")
                continue
            where = lone_surrogate_field(record)
            if where is not None:  # JSON lets "\\udfff" through; no hash, tokenizer or scorer can take it
                report.skip(path.name, f"line {line_no}", where, "holds a lone UTF-16 surrogate, which is not text")
                continue
            yield record


def _hub_rows(config: str) -> Iterator[dict]:
    # datasets takes about a second to import and only real PRISM from the hub needs it
    from datasets import load_dataset

    yield from load_dataset(HUB_ID, config, split="train")


def resolve_source(source: str | Path | None) -> str | Path:
    """'standin' (the default): our synthetic PRISM-shaped stand-in; 'contrast-fixture': the small
    extreme-contrast set for machinery tests; 'hub': real PRISM; anything else: a local folder."""
    if source is None or str(source) == "standin":
        return standin_dir()
    if str(source) == "contrast-fixture":
        return prism_fixture_dir()
    return source


def load_prism(source: str | Path | None = None) -> PrismData:
    """Load PRISM-shaped data from `source` (see :func:`resolve_source`)."""
    report = LoadReport()
    source = resolve_source(source)
    if str(source) == "hub":
        survey_rows: Iterable[dict] = _hub_rows("survey")
        conv_rows: Iterable[dict] = _hub_rows("conversations")
        survey_name, conv_name = "survey", "conversations"
    else:
        folder = Path(source)
        survey_path, conv_path = folder / "survey.jsonl", folder / "conversations.jsonl"
        for path in (survey_path, conv_path):
            if not path.is_file():
                raise FileNotFoundError(f"PRISM folder {folder} has no {path.name}")
        survey_rows, conv_rows = _read_jsonl(survey_path, report), _read_jsonl(conv_path, report)
        survey_name, conv_name = survey_path.name, conv_path.name
    survey: dict[str, SurveyRecord] = {}
    for row in survey_rows:
        record = validate_survey(row, survey_name, report)
        if record is None:
            continue
        if record.user_id in survey:  # the first record stands; a later one is reported, not merged
            report.skip(survey_name, record.user_id, "user_id", "appears again (the first record is kept)")
            continue
        survey[record.user_id] = record
    report.loaded["users"] = len(survey)
    turns = []
    seen_conversations: set[str] = set()
    for row in conv_rows:
        conv_id = row.get("conversation_id")
        if isinstance(conv_id, str) and conv_id in seen_conversations:
            report.skip(conv_name, conv_id, "conversation_id", "appears again (the first record is kept)")
            continue
        try:
            rated = validate_conversation(row, conv_name, report)
        except (TypeError, ValueError, KeyError, AttributeError) as err:  # a shape no check foresaw
            report.skip(conv_name, conv_id if isinstance(conv_id, str) else "?", "<record>",
                        f"could not be read ({type(err).__name__}: {err})")
            rated = []
        if isinstance(conv_id, str):
            seen_conversations.add(conv_id)
        turns.extend(rated)
    report.loaded["turns"] = len(turns)
    return PrismData(survey=survey, turns=turns, report=report)


# --- validation ----------------------------------------------------------------------------------


def _nonempty_str(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def validate_survey(row: dict, source: str, report: LoadReport) -> SurveyRecord | None:
    user_id = row.get("user_id")
    if not _nonempty_str(user_id):
        report.skip(source, row.get("user_id", "?"), "user_id", "is missing or empty")
        return None
    prefs = row.get("stated_prefs") or {}
    if not isinstance(prefs, dict):
        report.skip(source, user_id, "stated_prefs", "is not an object")
        return None
    safety = prefs.get("safety")
    if safety is not None and not (isinstance(safety, (int, float)) and 0 <= safety <= 100):
        report.skip(source, user_id, "stated_prefs.safety", f"must be a number in 0-100, got {safety!r}")
        return None
    demographics = {k: v for k, v in row.items() if k not in ("user_id", "stated_prefs")}
    return SurveyRecord(user_id=user_id, stated_safety=None if safety is None else float(safety),
                        demographics=demographics)


def validate_conversation(row: dict, source: str, report: LoadReport) -> list[RatedTurn]:
    """The rated turns of one conversation, or none if the record is malformed."""
    conv_id = row.get("conversation_id")
    if not _nonempty_str(conv_id):
        report.skip(source, "?", "conversation_id", "is missing or empty")
        return []
    for name in ("user_id",):
        if not _nonempty_str(row.get(name)):
            report.skip(source, conv_id, name, "is missing or empty")
            return []
    conv_type = row.get("conversation_type", "unguided")
    if conv_type not in CONVERSATION_TYPES:
        report.skip(source, conv_id, "conversation_type", f"must be one of {CONVERSATION_TYPES}, got {conv_type!r}")
        return []
    history = row.get("conversation_history")
    if not isinstance(history, list) or not history:
        report.skip(source, conv_id, "conversation_history", "is missing or not a non-empty list")
        return []
    by_turn: dict[int, dict[str, list]] = {}
    for index, item in enumerate(history):
        where = f"conversation_history[{index}]"
        if not isinstance(item, dict):
            report.skip(source, conv_id, where, "is not an object")
            return []
        turn, role, content = item.get("turn"), item.get("role"), item.get("content")
        if not isinstance(turn, int) or turn < 0:
            report.skip(source, conv_id, f"{where}.turn", f"must be a non-negative integer, got {turn!r}")
            return []
        if role not in ("user", "model"):
            report.skip(source, conv_id, f"{where}.role", f"must be 'user' or 'model', got {role!r}")
            return []
        if not _nonempty_str(content):
            report.skip(source, conv_id, f"{where}.content", "is missing or empty")
            return []
        if len(content) > MAX_TEXT_CHARS:
            report.skip(source, conv_id, f"{where}.content", f"is {len(content)} characters; the limit is {MAX_TEXT_CHARS}")
            return []
        slot = by_turn.setdefault(turn, {"user": [], "model": []})
        if role == "user":
            slot["user"].append(content)
            continue
        score = item.get("score")
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score) \
                or not 1 <= score <= 100:
            report.skip(source, conv_id, f"{where}.score", f"must be a number in 1-100, got {score!r}")
            return []
        chosen = item.get("if_chosen", False)
        if not isinstance(chosen, bool):
            report.skip(source, conv_id, f"{where}.if_chosen", f"must be true or false, got {chosen!r}")
            return []
        within = item.get("within_turn_id", len(slot["model"]))
        if isinstance(within, bool) or not isinstance(within, int) or within < 0:
            report.skip(source, conv_id, f"{where}.within_turn_id", f"must be a non-negative integer, got {within!r}")
            return []
        slot["model"].append(RatedResponse(text=content, model_name=str(item.get("model_name", "")),
                                           score=float(score), chosen=chosen, within_turn_id=within))
    turns: list[RatedTurn] = []
    context: list[tuple[str, str]] = []
    for turn in sorted(by_turn):
        slot = by_turn[turn]
        if len(slot["user"]) != 1:
            report.skip(source, conv_id, f"turn {turn}", f"needs exactly one user message, has {len(slot['user'])}")
            return turns
        if len(slot["model"]) < 2:
            report.skip(source, conv_id, f"turn {turn}", "needs at least two rated responses")
            return turns
        responses = tuple(slot["model"])
        turns.append(RatedTurn(conversation_id=conv_id, user_id=row["user_id"], conversation_type=conv_type,
                               turn=turn, history=tuple(context), prompt=slot["user"][0], responses=responses))
        best = chosen_response(responses)
        context += [("user", slot["user"][0]), ("assistant", best.text)]
    return turns


def chosen_response(responses: Iterable[RatedResponse]) -> RatedResponse:
    """The user's pick: `if_chosen` when marked, else the highest score (earliest on ties)."""
    responses = list(responses)
    marked = [r for r in responses if r.chosen]
    if marked:
        return marked[0]
    return max(responses, key=lambda r: (r.score, -r.within_turn_id))
