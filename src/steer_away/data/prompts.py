"""Which prompts an evaluation answers: the held-out side of the split that vector extraction used.

Extraction stores its split next to the vectors (`split.json`); the sweep, `calibrate` and
`categories check` all take their prompts from `PromptSplit.pairs`, and the commands read the split
back from the vector store they are given, so no evaluation answers a prompt its vectors came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from steer_away.data.categories import CategoryRule
from steer_away.data.pairs import PreferencePair, preference_pairs, split_pairs
from steer_away.data.prism import RatedTurn, load_prism
from steer_away.errors import InputError
from steer_away.files import read_structured

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


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per non-empty line."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
