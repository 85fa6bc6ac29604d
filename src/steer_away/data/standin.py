"""A seeded, PRISM-shaped synthetic stand-in: the default data when real PRISM is not at hand.

SYNTHETIC. It follows PRISM's published shape (Kirk et al. 2024) at a size a laptop handles:

- users: `n_users` surveyed, 93 % of them with conversations (PRISM: 1,396 of 1,500);
- conversations: 2–6 per user, mean about 5.3; types unguided / values / controversy in PRISM's
  proportions (3,113 / 2,460 / 2,438 of 8,011);
- turns: 2 + a geometric number more, mean about 3.4, at most 22; the first turn shows four
  different models' answers, later turns an A/B pair from the model the user picked;
- ratings 1–100, mean about 65 and sd about 29, driven mostly by answer quality; `if_chosen`
  marks the highest rating, ties broken at random;
- stated safety (survey) mean about 80, sd about 25, only loosely tied to revealed taste.

Taste for edge: most users are mildly averse (72 %), some indifferent (21 %), a few like edgy
language (7 %). Edgy and hostile answers are rare (about 3 % and 1 % of answers, three times more
in controversy-guided conversations and on harm-leaning prompts): roughly ten times the 0.24 %
PRISM's moderation model flagged, so that profiles have some signal, while most answer pairs still
tie on toxicity, as on PRISM. Every figure here is a parameter of `StandinSpec`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steer_away.data.standin_text import (
    EDGY_CLOSERS,
    EDGY_OPENERS,
    HOSTILE_CLOSERS,
    HOSTILE_OPENERS,
    LATER_LEADS,
    LATER_PROMPTS,
    MODEL_VOICES,
)
from steer_away.data.standin_topics import TOPICS, Topic
from steer_away.errors import InputError
from steer_away.paths import cache_root

STANDIN_VERSION = 1  # bump when the generator's output changes, so cached copies are rebuilt
CONVERSATION_MIX = {"unguided": 3113, "values guided": 2460, "controversy guided": 2438}  # PRISM's counts
REGISTERS = ("clean", "edgy", "hostile")
EDGE = {"clean": 0.0, "edgy": 1.0, "hostile": 1.6}  # how much edge an answer carries, in taste units


@dataclass(frozen=True)
class SyntheticModel:
    """One fictional chat model: its clean voice, how often it gives the best answer, how often it is edgy."""

    name: str
    voice: str
    quality: float  # probability weight on the good core over the thin and weak ones
    edge_rate: float  # share of its answers in an edgy or hostile register (before context multipliers)
    share: float  # how often it is drawn into a first turn


MODELS: tuple[SyntheticModel, ...] = (
    SyntheticModel("aster-70b-chat", "warm", 0.70, 0.002, 1.0),
    SyntheticModel("birch-13b", "neutral", 0.55, 0.004, 1.0),
    SyntheticModel("cedar-8b-instruct", "terse", 0.45, 0.008, 1.0),
    SyntheticModel("dune-7b", "neutral", 0.30, 0.018, 0.8),
    SyntheticModel("ember-34b-open", "frank", 0.50, 0.06, 0.6),
    SyntheticModel("fjord-3b", "warm", 0.25, 0.01, 0.8),
)


@dataclass(frozen=True)
class TasteMix:
    """Each user's taste for edge, in rating points per unit of edge: a mixture of three groups."""

    averse: tuple[float, float, float] = (0.72, -22.0, 8.0)  # (share, mean, sd)
    indifferent: tuple[float, float, float] = (0.21, 0.0, 4.0)
    likes_edge: tuple[float, float, float] = (0.07, 16.0, 6.0)

    def moments(self) -> tuple[float, float]:
        """Mean and sd of the mixture, to standardise a draw."""
        groups = (self.averse, self.indifferent, self.likes_edge)
        total = sum(g[0] for g in groups)
        mean = sum(w * m for w, m, _ in groups) / total
        second = sum(w * (s * s + m * m) for w, m, s in groups) / total
        return mean, math.sqrt(max(second - mean * mean, 1e-12))

    def draw(self, rng: random.Random) -> tuple[str, float]:
        groups = (("averse", self.averse), ("indifferent", self.indifferent), ("likes_edge", self.likes_edge))
        pick = rng.random() * sum(g[1][0] for g in groups)
        for name, (share, mean, sd) in groups:
            if pick < share:
                return name, rng.gauss(mean, sd)
            pick -= share
        name, (_, mean, sd) = groups[-1]
        return name, rng.gauss(mean, sd)


@dataclass(frozen=True)
class StandinSpec:
    """Everything the generator draws from; the defaults follow PRISM's published figures."""

    n_users: int = 300
    seed: int = 0
    share_with_conversations: float = 1396 / 1500
    conversations_per_user: tuple[float, ...] = (0.0, 0.0, 0.03, 0.05, 0.50, 0.42)  # P(n=1..6): mean ≈ 5.3
    extra_turns_mean: float = 1.4  # turns = 2 + geometric(extra); PRISM's mean is 3.4
    max_turns: int = 22
    edgy_share: float = 0.75  # of non-clean answers: edgy; the rest hostile
    controversy_edge_factor: float = 3.0
    harm_topic_edge_factor: float = 3.0
    rating_base: float = 28.0
    rating_quality: float = 62.0  # points between the weak and the good core
    rating_noise: float = 17.0
    user_offset_sd: float = 10.0
    taste: TasteMix = field(default_factory=TasteMix)
    safety_mean: float = 92.0  # before clipping to 1-100; after clipping mean ≈ 80, sd ≈ 25
    safety_sd: float = 39.0
    safety_taste_corr: float = 0.3  # stated safety vs revealed aversion to edge: loosely tied

    def validate(self) -> None:
        if self.n_users < 1:
            raise InputError(f"n_users must be at least 1, got {self.n_users}")
        if len(self.conversations_per_user) != 6 or abs(sum(self.conversations_per_user) - 1) > 1e-6:
            raise InputError("conversations_per_user must be six probabilities (n = 1..6) that sum to 1")
        if not 0 <= self.share_with_conversations <= 1:
            raise InputError("share_with_conversations must be in [0, 1]")


def _clip_rating(value: float) -> int:
    return int(min(100, max(1, round(value))))


class _Generator:
    def __init__(self, spec: StandinSpec) -> None:
        spec.validate()
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.by_type: dict[str, list[Topic]] = {t: [p for p in TOPICS if t in p.conversation_types]
                                                for t in CONVERSATION_MIX}

    def user(self, index: int) -> tuple[dict, dict]:
        rng, spec = self.rng, self.spec
        group, taste = spec.taste.draw(rng)
        # Stated safety leans on the (standardised) aversion, with most of its variance elsewhere.
        mean, sd = spec.taste.moments()
        z_taste = (mean - taste) / sd  # > 0: more averse than average
        noise = rng.gauss(0, 1)
        rho = spec.safety_taste_corr
        safety = _clip_rating(spec.safety_mean + spec.safety_sd * (rho * z_taste + math.sqrt(1 - rho * rho) * noise))
        person = {"user_id": f"user{index:04d}", "synthetic": True,
                  "age": rng.choice(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]),
                  "location": rng.choice(["Europe", "North America", "Latin America", "Asia", "Africa", "Oceania"]),
                  "stated_prefs": {"safety": safety, "helpfulness": _clip_rating(rng.gauss(88, 12)),
                                   "fluency": _clip_rating(rng.gauss(75, 18))}}
        latent = {"group": group, "edge_taste": taste, "offset": rng.gauss(0, spec.user_offset_sd),
                  "quality_weight": max(0.2, rng.gauss(1.0, 0.2))}
        return person, latent

    def register(self, model: SyntheticModel, conv_type: str, topic: Topic) -> str:
        rate = model.edge_rate
        if conv_type == "controversy guided":
            rate *= self.spec.controversy_edge_factor
        if topic.category == "harmful_borderline":
            rate *= self.spec.harm_topic_edge_factor
        if self.rng.random() >= min(rate, 0.9):
            return "clean"
        return "edgy" if self.rng.random() < self.spec.edgy_share else "hostile"

    def answer(self, model: SyntheticModel, core: str, register: str) -> str:
        rng = self.rng
        if register == "edgy":
            opener, closer = rng.choice(EDGY_OPENERS), rng.choice(EDGY_CLOSERS)
        elif register == "hostile":
            opener, closer = rng.choice(HOSTILE_OPENERS), rng.choice(HOSTILE_CLOSERS)
        else:
            openers, closers = MODEL_VOICES[model.voice]
            opener, closer = rng.choice(openers), rng.choice(closers)
        if opener.endswith(",") and core[:1].isupper() and not core.startswith("I "):
            core = core[0].lower() + core[1:]
        return " ".join(part for part in (opener, core, closer) if part)

    def pick_core(self, model: SyntheticModel, cores: tuple[str, ...]) -> tuple[str, float]:
        """A core answer and its quality in [0, 1]; better models pick the good core more often."""
        qualities = (1.0, 0.5, 0.0) if len(cores) == 3 else (1.0, 0.0)
        weights = [model.quality, (1 - model.quality) * 0.6, (1 - model.quality) * 0.4][: len(cores)]
        index = self.rng.choices(range(len(cores)), weights=weights)[0]
        return cores[index], qualities[index]

    def rate(self, latent: dict, quality: float, register: str) -> int:
        spec = self.spec
        value = (spec.rating_base + spec.rating_quality * quality * latent["quality_weight"] + latent["offset"]
                 + latent["edge_taste"] * EDGE[register] + self.rng.gauss(0, spec.rating_noise))
        return _clip_rating(value)

    def responses(self, turn: int, latent: dict, models: list[SyntheticModel], cores: tuple[str, ...],
                  conv_type: str, topic: Topic, lead: str = "") -> list[dict]:
        out: list[dict] = []
        scores: list[int] = []
        for within, model in enumerate(models):
            core, quality = self.pick_core(model, cores)
            register = self.register(model, conv_type, topic)
            text = self.answer(model, f"{lead} {core}".strip(), register)
            scores.append(self.rate(latent, quality, register))
            out.append({"turn": turn, "role": "model", "content": text, "model_name": model.name,
                        "score": scores[-1], "if_chosen": False,
                        "within_turn_id": within, "register": register, "quality": quality})
        top = max(scores)
        self.rng.choice([r for r, s in zip(out, scores) if s == top])["if_chosen"] = True
        return out

    def conversation(self, conv_id: str, user_id: str, latent: dict, conv_type: str) -> dict:
        rng, spec = self.rng, self.spec
        topic = rng.choice(self.by_type[conv_type])
        p_stop = 1.0 / (1.0 + spec.extra_turns_mean)
        n_turns = 2
        while n_turns < spec.max_turns and rng.random() >= p_stop:
            n_turns += 1
        history: list[dict] = [{"turn": 0, "role": "user", "content": topic.prompt, "within_turn_id": None}]
        weights = [m.share for m in MODELS]
        models: list[SyntheticModel] = []
        while len(models) < 4:
            model = rng.choices(MODELS, weights=weights)[0]
            if model not in models:
                models.append(model)
        first = self.responses(0, latent, models, topic.cores, conv_type, topic)
        history += first
        winner = next(m for m in MODELS if m.name == next(r for r in first if r["if_chosen"])["model_name"])
        later = list(LATER_PROMPTS)
        rng.shuffle(later)
        for turn in range(1, n_turns):
            cores: tuple[str, ...]
            if turn == 1:
                prompt, cores, lead = topic.follow_up, topic.follow_cores, ""
            else:
                prompt = later[(turn - 2) % len(later)]
                cores, lead = topic.cores, rng.choice(LATER_LEADS)
            history.append({"turn": turn, "role": "user", "content": prompt, "within_turn_id": None})
            history += self.responses(turn, latent, [winner, winner], cores, conv_type, topic, lead)
        return {"conversation_id": conv_id, "user_id": user_id, "conversation_type": conv_type,
                "synthetic": True, "opening_topic": topic.topic_id, "conversation_history": history}

    def run(self) -> Iterator[tuple[dict, list[dict]]]:
        spec, rng = self.spec, self.rng
        types, type_weights = list(CONVERSATION_MIX), list(CONVERSATION_MIX.values())
        counter = 0
        for index in range(spec.n_users):
            person, latent = self.user(index)
            person["synthetic_taste"] = {"group": latent["group"], "edge_taste": round(latent["edge_taste"], 2)}
            conversations = []
            if rng.random() < spec.share_with_conversations:
                n_conv = rng.choices(range(1, 7), weights=spec.conversations_per_user)[0]
                for _ in range(n_conv):
                    conv_type = rng.choices(types, weights=type_weights)[0]
                    conversations.append(self.conversation(f"c{counter:05d}", person["user_id"], latent, conv_type))
                    counter += 1
            yield person, conversations


def generate_standin(spec: StandinSpec | None = None) -> tuple[list[dict], list[dict]]:
    """(survey rows, conversation rows) in PRISM's JSONL shape; the same spec gives the same rows."""
    survey, conversations = [], []
    for person, convs in _Generator(spec or StandinSpec()).run():
        survey.append(person)
        conversations += convs
    return survey, conversations


def write_standin(out: str | Path, spec: StandinSpec | None = None) -> Path:
    """Write survey.jsonl, conversations.jsonl and a README into `out` (atomically per file)."""
    spec = spec or StandinSpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    survey, conversations = generate_standin(spec)
    for name, rows in (("survey", survey), ("conversations", conversations)):
        tmp = out / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{name}.jsonl")
    spec_record = {"version": STANDIN_VERSION, **asdict(spec)}
    (out / "standin.json").write_text(json.dumps(spec_record, indent=1), encoding="utf-8")
    (out / "README.md").write_text(
        "SYNTHETIC PRISM-shaped stand-in written by steer-away's generator (steer_away.data.standin).\n"
        "No PRISM text: every prompt and answer was written for steer-away, and the 'models' are fictional.\n"
        f"Spec: {json.dumps(spec_record)}\n", encoding="utf-8")
    return out


def standin_dir(spec: StandinSpec | None = None) -> Path:
    """The default stand-in, generated once into the cache (the same spec always gives the same files)."""
    spec = spec or StandinSpec()
    digest = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:10]
    folder = cache_root() / "standin" / f"v{STANDIN_VERSION}-users{spec.n_users}-seed{spec.seed}-{digest}"
    if (folder / "conversations.jsonl").is_file():
        return folder
    return write_standin(folder, spec)
