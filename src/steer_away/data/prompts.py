"""Which prompts an evaluation answers, and the check that none of them trained a vector.

Three sources: the held-out side of the split that vector extraction used (extraction stores its
split next to the vectors, `split.json`, and the commands read it back from the vector store they
are given); our shipped evaluation set (`shipped`, 220 opening prompts we wrote in PRISM's topic
mix); or a prompt file (JSON lines with a category per prompt, or plain text, one prompt a line).
Whatever the source, a prompt that is also a training prompt of the vectors is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from steer_away.data.categories import CATEGORIES, CategoryRule
from steer_away.data.pairs import PreferencePair, preference_pairs, split_pairs
from steer_away.data.prism import RatedTurn, load_prism
from steer_away.errors import InputError
from steer_away.files import lone_surrogate_at, read_structured
from steer_away.resources import eval_prompts_path

SPLIT_FILE = "split.json"
SPLIT_FORMAT = "steer-away/prompt-split@1"


class PromptSplitError(InputError):
    """A split.json that is not one of ours or holds impossible values."""


@dataclass(frozen=True)
class PromptSplit:
    """How preference pairs were split into training and held-out opening prompts."""

    holdout: float = 0.3  # share of opening prompts held out, in each prompt category
    seed: int = 0
    min_margin: float = 0.0  # pairs below this rating margin are dropped before the split

    def __post_init__(self) -> None:
        if not (isinstance(self.holdout, (int, float)) and 0 <= self.holdout <= 1):
            raise PromptSplitError(f"holdout must be a number in [0, 1], got {self.holdout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PromptSplitError(f"seed must be a whole number, got {self.seed!r}")
        if not (isinstance(self.min_margin, (int, float)) and math.isfinite(self.min_margin)):
            raise PromptSplitError(f"min_margin must be a finite number, got {self.min_margin!r}")

    def pairs(self, turns: list[RatedTurn]) -> tuple[list[PreferencePair], list[PreferencePair]]:
        """(training, held-out) preference pairs of these turns."""
        return split_pairs(preference_pairs(turns, min_margin=self.min_margin), holdout=self.holdout, seed=self.seed)

    def save(self, folder: str | Path) -> Path:
        """Write the split into a vector store folder, where :meth:`stored_with` finds it."""
        path = Path(folder) / SPLIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": SPLIT_FORMAT, **asdict(self)}, indent=1), encoding="utf-8")
        return path

    @classmethod
    def stored_with(cls, vectors: str | Path | None) -> PromptSplit:
        """The split stored with a vector store: in the folder given, or up to two folders above it
        (so a bank folder or one vector file of the store finds it too). The default split when no
        store is given or the store predates stored splits."""
        if vectors is None:
            return cls()
        start = Path(vectors)
        for folder in [start, *start.parents][:3]:
            path = folder / SPLIT_FILE
            if path.is_file():
                return cls.load(path)
        return cls()

    @classmethod
    def load(cls, path: str | Path) -> PromptSplit:
        raw = read_structured(path, "prompt split", "json", error=PromptSplitError)
        if not isinstance(raw, dict) or raw.get("format") != SPLIT_FORMAT:
            raise PromptSplitError(f"{path} is not a steer-away prompt split (expected format '{SPLIT_FORMAT}')")
        fields = {k: v for k, v in raw.items() if k != "format"}
        unknown = sorted(set(fields) - {"holdout", "seed", "min_margin"})
        if unknown:
            raise PromptSplitError(f"{path}: unknown field '{unknown[0]}'")
        try:
            return cls(**fields)
        except PromptSplitError as err:
            raise PromptSplitError(f"{path}: {err}") from None


def heldout_openings(prism: str | Path | None, n: int, split: PromptSplit | None = None) -> list[str]:
    """`n` opening prompts no vector was extracted from (the held-out side of `split`, by default the
    default split), taken round-robin over the prompt categories."""
    _, held = (split or PromptSplit()).pairs(load_prism(prism).turns)
    rule = CategoryRule()
    by_category: dict[str, list[str]] = {}
    for pair in held:
        category = rule.categorise(pair.opening, pair.conversation_type)
        if pair.opening not in by_category.setdefault(category, []):
            by_category[category].append(pair.opening)
    queues = [sorted(v) for _, v in sorted(by_category.items())]
    out: list[str] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


SHIPPED = "shipped"  # our evaluation set (resources/eval_prompts.jsonl)
HELDOUT = "heldout"  # the held-out opening prompts of the preference data in use


class PromptFileError(InputError):
    """A prompt file with a bad line or field; names the file, the line and the field."""


class PromptOverlapError(InputError):
    """An evaluation prompt that some vector was trained on."""


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt every evaluation user answers, with the category results are broken down by."""

    prompt_id: str
    text: str
    category: str
    cluster: str = ""  # topic cluster, as PRISM groups opening prompts
    conversation_type: str = "unguided"


def prompt_source(value: object, base: Path | None = None) -> str:
    """A prompt source as configs and flags give it: 'heldout', 'shipped', or a prompt file that exists
    (a relative path is also looked for beside `base`, a config's folder)."""
    if value in (HELDOUT, SHIPPED):
        return str(value)
    if not isinstance(value, str):
        raise PromptFileError(f"prompts must be '{HELDOUT}', '{SHIPPED}' or a file path, got {value!r}")
    path = Path(value)
    if not path.is_absolute() and not path.is_file() and base is not None and (base / path).is_file():
        path = base / path
    if not path.is_file():
        raise PromptFileError(f"prompts names {value}, which is not a file")
    return str(path)


def prompt_id(text: str) -> str:
    """A prompt's id when its file gives none: stable across runs and machines."""
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _json_prompt(raw: object, where: str, rule: CategoryRule) -> EvalPrompt:
    if not isinstance(raw, dict):
        raise PromptFileError(f"{where}: expected a JSON object with a 'prompt'")
    unknown = sorted(set(raw) - {"id", "prompt", "category", "cluster", "conversation_type", "synthetic"})
    if unknown:
        raise PromptFileError(f"{where}: unknown field '{unknown[0]}'")
    text = raw.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(f"{where}: field 'prompt' must be non-empty text")
    for key in ("prompt", "id", "category", "cluster", "conversation_type"):
        if key in raw and not isinstance(raw[key], str):
            raise PromptFileError(f"{where}: field '{key}' must be text, got {raw[key]!r}")
        if key in raw and lone_surrogate_at(raw[key]) is not None:
            raise PromptFileError(f"{where}: field '{key}' holds a lone UTF-16 surrogate (\\ud800-\\udfff), which "
                                  "is not text")
    conversation_type = raw.get("conversation_type", "unguided")
    category = raw.get("category") or rule.categorise(text, conversation_type)
    if category not in CATEGORIES:
        raise PromptFileError(f"{where}: field 'category' is '{category}'; choose one of {', '.join(CATEGORIES)}")
    return EvalPrompt(raw.get("id") or prompt_id(text.strip()), text.strip(), category, raw.get("cluster", ""),
                      conversation_type)


def read_eval_prompts(path: str | Path | None = None, rule: CategoryRule | None = None) -> list[EvalPrompt]:
    """The prompts of a file (default: our shipped set). JSON lines take their category from the
    file (`rule` categorises lines without one); plain text is one prompt a line, categorised by
    `rule`. Ids must be unique."""
    source = Path(path) if path is not None else eval_prompts_path()
    rule = rule or CategoryRule()
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"cannot read prompt file {source}: {err}") from None
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    as_json = source.suffix in (".jsonl", ".json") or (bool(numbered) and numbered[0][1].startswith("{"))
    prompts: list[EvalPrompt] = []
    seen: dict[str, int] = {}
    for number, line in numbered:
        where = f"{source} line {number}"
        if as_json:
            try:
                raw = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                raise PromptFileError(f"{where} is not valid JSON: {getattr(err, 'msg', 'nested too deeply')}") \
                    from None
            prompt = _json_prompt(raw, where, rule)
        else:
            prompt = EvalPrompt(prompt_id(line), line, rule.categorise(line))
        if prompt.prompt_id in seen:
            raise PromptFileError(f"{where}: prompt id '{prompt.prompt_id}' repeats line {seen[prompt.prompt_id]}")
        seen[prompt.prompt_id] = number
        prompts.append(prompt)
    if not prompts:
        raise PromptFileError(f"prompt file {source} holds no prompts")
    return prompts


def pick_per_category(prompts: Sequence[EvalPrompt], per_category: int | None, seed: int = 0) -> list[EvalPrompt]:
    """`per_category` prompts of each category (all when None or more than it has), drawn with
    `seed`, in category then file order: the same draw on every machine."""
    order = {p.prompt_id: i for i, p in enumerate(prompts)}
    rng = random.Random(seed)
    out: list[EvalPrompt] = []
    for category in sorted({p.category for p in prompts}):
        members = [p for p in prompts if p.category == category]
        if per_category is not None and per_category < len(members):
            members = rng.sample(members, per_category)
        out.extend(sorted(members, key=lambda p: order[p.prompt_id]))
    return out


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def training_prompts(pairs: Iterable[PreferencePair]) -> set[str]:
    """Every user message (opening prompts and later turns) that training pairs came from."""
    return {_normalised(t) for pair in pairs for t in (pair.prompt, pair.opening) if t}


def checked_prompts(source: str, training: Iterable[PreferencePair] | None, rule: CategoryRule | None = None,
                    where: str | None = None) -> list[EvalPrompt]:
    """The prompts of our shipped set or a file (`source`), refused if any of them is among the
    `training` pairs' prompts (None: no vectors to check against); `where` names the source in the error."""
    prompts = read_eval_prompts(None if source == SHIPPED else source, rule)
    if training is not None:
        refuse_overlap(prompts, training_prompts(training), where or f"prompts '{source}'")
    return prompts


def refuse_overlap(prompts: Sequence[EvalPrompt], trained_on: set[str], source: str) -> None:
    """Raise PromptOverlapError if any evaluation prompt is one a vector was trained on."""
    overlap = [p for p in prompts if _normalised(p.text) in trained_on]
    if overlap:
        first = overlap[0]
        raise PromptOverlapError(f"{source}: {len(overlap)} evaluation prompt(s) are training prompts of the vectors, "
                                 f"e.g. '{first.prompt_id}' ({first.text[:60]!r}); remove them or change the split")
