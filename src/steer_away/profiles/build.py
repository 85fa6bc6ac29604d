"""Per-user toxicity profiles built from PRISM choices and toxicity scores."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from steer_away.data.pairs import PreferencePair
from steer_away.data.prism import PrismData, RatedTurn, chosen_response
from steer_away.errors import InputError
from steer_away.files import read_structured, write_atomically
from steer_away.profiles.bradley_terry import fit_ideal_point
from steer_away.scoring.base import ToxicityScorer

SENSITIVITIES = ("strict", "moderate", "tolerant")
PROFILE_FORMAT = "steer-away/profiles@1"


@dataclass
class UserProfile:
    """What one user wants from the model's language, learned from their own choices."""

    user_id: str
    attributes: list[str]
    preferred_toxicity: list[float]  # score-weighted mean toxicity of the responses they chose
    rejected_toxicity: list[float]  # mean toxicity of the responses they rated lower
    dislike: float  # mean TOXICITY the rejected answers carried beyond the chosen ones (>0: avoids toxicity)
    stated_safety: float | None  # survey: how much safety matters, 1-100
    sensitivity: str  # strict | moderate | tolerant
    bt_theta: list[float]  # Bradley–Terry ideal point in toxicity-attribute space
    n_pairs: int
    n_turns: int
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def preferred_vector(self) -> np.ndarray:
        return np.asarray(self.preferred_toxicity)

    def primary(self) -> float:
        """Preferred score on the first attribute (TOXICITY for every backend we ship)."""
        return self.preferred_toxicity[0]

    def tolerated(self) -> float:
        """The most TOXICITY (first attribute) this user tolerates, the line a boundary violation crosses."""
        return tolerated_toxicity(self.preferred_toxicity[0], self.rejected_toxicity[0])


def tolerated_toxicity(preferred: float, rejected: float) -> float:
    """Where a user draws the line: halfway between the TOXICITY they chose and the one they turned down,
    when what they turned down was more toxic (the line lies between, and halfway is the least committal
    point); what they chose, when it was not (they turned nothing down for being toxic, so nothing above
    their choices is known to be tolerated)."""
    return (preferred + rejected) / 2 if rejected > preferred else preferred


@dataclass(frozen=True)
class SensitivityRule:
    """Users below the `strict_below` quantile of preferred TOXICITY are strict, above `tolerant_above`
    tolerant. Fixed thresholds (absolute TOXICITY values) replace quantiles when given."""

    strict_below: float = 1 / 3
    tolerant_above: float = 2 / 3
    absolute: bool = False

    def __post_init__(self) -> None:
        kind = "TOXICITY values" if self.absolute else "quantiles"
        for name in ("strict_below", "tolerant_above"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
                raise InputError(f"sensitivity threshold {name} must be a number in 0-1 ({kind}), got {value}")
        if self.strict_below > self.tolerant_above:
            raise InputError(f"sensitivity thresholds in the wrong order: strict_below {self.strict_below} is above "
                             f"tolerant_above {self.tolerant_above}")

    def cutoffs(self, preferred: Sequence[float]) -> tuple[float, float]:
        if self.absolute:
            return self.strict_below, self.tolerant_above
        values = np.asarray(preferred)
        return float(np.quantile(values, self.strict_below)), float(np.quantile(values, self.tolerant_above))

    @staticmethod
    def classify(value: float, cutoffs: tuple[float, float]) -> str:
        low, high = cutoffs
        return "strict" if value <= low else "tolerant" if value > high else "moderate"


class ProfileEvidence:
    """What one user's profile is computed from, gathered a rated turn at a time: a batch build and a
    server learning from choices as they come feed the same object, so replaying a user's choices gives
    the profile a build over them gives."""

    def __init__(self, n_attributes: int) -> None:
        self.n_attributes = n_attributes
        self.chosen: list[np.ndarray] = []  # the chosen answer's scores, per turn
        self.weights: list[float] = []  # its rating / 100
        self.rejected: list[np.ndarray] = []  # every lower-rated answer's scores
        self.diffs: list[np.ndarray] = []  # chosen minus rejected, per pair
        self.n_turns = 0

    def add_turn(self, chosen: np.ndarray, weight: float, rejected: Sequence[np.ndarray]) -> None:
        self.chosen.append(chosen)
        self.weights.append(weight)
        for other in rejected:
            self.rejected.append(other)
            self.diffs.append(chosen - other)
        self.n_turns += 1

    @property
    def n_pairs(self) -> int:
        return len(self.diffs)

    def profile(self, user_id: str, attributes: list[str], stated_safety: float | None, *, bt_l2: float = 1.0,
                sensitivity: str = "moderate") -> UserProfile:
        preferred = np.average(np.stack(self.chosen), axis=0, weights=np.asarray(self.weights))
        rejected = np.mean(self.rejected, axis=0) if self.rejected else preferred
        diff_arr = np.asarray(self.diffs).reshape(-1, self.n_attributes)
        dislike = float(-diff_arr[:, 0].mean()) if len(diff_arr) else 0.0
        theta = fit_ideal_point(diff_arr, l2=bt_l2) if len(diff_arr) else np.zeros(self.n_attributes)
        return UserProfile(
            user_id=user_id, attributes=attributes, preferred_toxicity=preferred.tolist(),
            rejected_toxicity=np.asarray(rejected).tolist(), dislike=dislike, stated_safety=stated_safety,
            sensitivity=sensitivity, bt_theta=theta.tolist(), n_pairs=len(diff_arr), n_turns=self.n_turns)


def build_profiles(
    data: PrismData,
    scorer: ToxicityScorer,
    *,
    rule: SensitivityRule | None = None,
    bt_l2: float = 1.0,
) -> dict[str, UserProfile]:
    """Profiles for every user with at least one rated turn."""
    rule = rule or SensitivityRule()
    by_user: dict[str, list[RatedTurn]] = {}
    for turn in data.turns:
        by_user.setdefault(turn.user_id, []).append(turn)
    texts = sorted({r.text for t in data.turns for r in t.responses})
    scores = dict(zip(texts, scorer.score(texts)))
    drafts = {}
    for user_id, turns in sorted(by_user.items()):
        evidence = ProfileEvidence(len(scorer.attributes))
        for turn in turns:
            best = chosen_response(turn.responses)
            evidence.add_turn(scores[best.text], best.score / 100.0,
                              [scores[o.text] for o in turn.responses if o is not best and o.score < best.score])
        survey = data.survey.get(user_id)
        drafts[user_id] = evidence.profile(user_id, list(scorer.attributes),
                                           survey.stated_safety if survey else None, bt_l2=bt_l2)
    if drafts:
        cutoffs = rule.cutoffs([p.primary() for p in drafts.values()])
        for profile in drafts.values():
            profile.sensitivity = rule.classify(profile.primary(), cutoffs)
            profile.extra["sensitivity_cutoffs"] = list(cutoffs)
    return drafts


def pick_users(profiles: Mapping[str, UserProfile], per_sensitivity: int) -> list[str]:
    """The users an evaluation steers: `per_sensitivity` of each sensitivity, those with the most rated
    turns first (ties by id), so every group is represented by users with data to learn from."""
    chosen: list[str] = []
    for sensitivity in SENSITIVITIES:
        group = [p for p in profiles.values() if p.sensitivity == sensitivity]
        group.sort(key=lambda p: (-p.n_turns, p.user_id))
        chosen += [p.user_id for p in group[:per_sensitivity]]
    return chosen


def pair_toxicity_diffs(pairs: Sequence[PreferencePair], scorer: ToxicityScorer) -> np.ndarray:
    """(pairs, attributes): toxicity of chosen minus rejected, for Bradley–Terry fits and PPA."""
    texts = sorted({p.chosen for p in pairs} | {p.rejected for p in pairs})
    scores = dict(zip(texts, scorer.score(texts)))
    return np.stack([scores[p.chosen] - scores[p.rejected] for p in pairs]) if pairs else np.zeros((0, 0))


def profiles_payload(profiles: Mapping[str, UserProfile], scorer_backend: str) -> dict[str, object]:
    """A profiles file's content, as `load_profiles` reads it back."""
    return {"format": PROFILE_FORMAT, "scorer": scorer_backend, "profiles": [asdict(p) for p in profiles.values()]}


def save_profiles(profiles: dict[str, UserProfile], path: str | Path, scorer_backend: str) -> None:
    text = json.dumps(profiles_payload(profiles, scorer_backend), indent=1)
    write_atomically(path, "profiles file", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def profiles_scorer(path: str | Path) -> str | None:
    """The scorer backend (with its revision) a profiles file was scored by; None if it does not say."""
    payload = read_structured(path, "profiles file", "json")
    scorer = payload.get("scorer") if isinstance(payload, dict) else None
    return scorer if isinstance(scorer, str) else None


def load_profiles(path: str | Path) -> dict[str, UserProfile]:
    """Read a profiles file; any malformed record is an error naming the file, the record and the field."""
    payload = read_structured(path, "profiles file", "json")
    if not isinstance(payload, dict) or payload.get("format") != PROFILE_FORMAT:
        raise InputError(f"{path} is not a steer-away profiles file (expected format '{PROFILE_FORMAT}')")
    records = payload.get("profiles", [])
    if not isinstance(records, list):
        raise InputError(f"{path}: 'profiles' must be a list of profile objects, got {type(records).__name__}")
    profiles: dict[str, UserProfile] = {}
    first_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        profile = _profile_from_record(record, f"{path}: profiles[{index}]")
        if profile.user_id in first_seen:
            raise InputError(f"{path}: user '{profile.user_id}' appears twice (profiles[{first_seen[profile.user_id]}] "
                             f"and profiles[{index}])")
        first_seen[profile.user_id] = index
        profiles[profile.user_id] = profile
    return profiles


def _finite_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(v) for v in value)


def _profile_from_record(record: object, where: str) -> UserProfile:
    if not isinstance(record, dict):
        raise InputError(f"{where} is not an object")
    user = record.get("user_id")
    if not isinstance(user, str) or not user.strip():
        raise InputError(f"{where}: 'user_id' must be a non-empty string")
    where = f"{where} (user {user})"
    names = set(UserProfile.__dataclass_fields__)
    missing = sorted(names - set(record) - {"extra"})
    if missing:
        raise InputError(f"{where} lacks {missing}")
    unknown = sorted(set(record) - names)
    if unknown:
        raise InputError(f"{where}: unknown field '{unknown[0]}'")
    attributes = record["attributes"]
    if not isinstance(attributes, list) or not attributes or not all(isinstance(a, str) for a in attributes):
        raise InputError(f"{where}: 'attributes' must be a non-empty list of names")
    for key in ("preferred_toxicity", "rejected_toxicity"):
        if not _finite_list(record[key]) or len(record[key]) != len(attributes):
            raise InputError(f"{where}: '{key}' must list {len(attributes)} finite numbers, one per attribute")
    if not _finite_list(record["bt_theta"]):
        raise InputError(f"{where}: 'bt_theta' must be a list of finite numbers")
    dislike = record["dislike"]
    if isinstance(dislike, bool) or not isinstance(dislike, (int, float)) or not math.isfinite(dislike):
        raise InputError(f"{where}: 'dislike' must be a finite number, got {dislike!r}")
    safety = record["stated_safety"]
    if safety is not None and (isinstance(safety, bool) or not isinstance(safety, (int, float))
                               or not 0 <= safety <= 100):
        raise InputError(f"{where}: 'stated_safety' must be null or a number in 0-100, got {safety!r}")
    if record["sensitivity"] not in SENSITIVITIES:
        raise InputError(f"{where}: 'sensitivity' must be one of {', '.join(SENSITIVITIES)}, "
                         f"got {record['sensitivity']!r}")
    for key in ("n_pairs", "n_turns"):
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where}: '{key}' must be a whole number >= 0, got {value!r}")
    if not isinstance(record.get("extra", {}), dict):
        raise InputError(f"{where}: 'extra' must be an object")
    return UserProfile(**{k: v for k, v in record.items() if k in names})
