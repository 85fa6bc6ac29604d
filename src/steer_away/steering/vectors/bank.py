"""Vector banks: where CAA methods find their vectors, and the one pipeline that builds them.

A vector store is a folder:

    population.safetensors          the population mean-difference vector
    pair_activations.safetensors    per-pair differences it came from (composition reuses them)
    dislike/  population.safetensors + users/<id>.safetensors   dislike-weighted per-user vectors
    bt/       population.safetensors + users/<id>.safetensors   Bradley–Terry per-user vectors

`steer-away vectors extract` and `compose` write it piece by piece; a sweep writes it whole with
:func:`build_vector_store`. Both run the same functions below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from steer_away import internals
from steer_away.data.pairs import pair_coverage, sample_pairs
from steer_away.data.prompts import PromptSplit
from steer_away.errors import InputError
from steer_away.profiles.build import pair_toxicity_diffs
from steer_away.steering.vectors.compose import bt_vectors, dislike_vectors, population_vector
from steer_away.steering.vectors.extract import PairActivations, extract_pair_activations, save_pair_activations
from steer_away.steering.vectors.kinds import BT, COMPOSED_KINDS, DISLIKE, FOREIGN_VECTOR_KINDS, bank_kind
from steer_away.steering.vectors.layers import SEED_SPEC, parse_layer_spec
from steer_away.steering.vectors.vector import (
    MissingVectorsError,
    SteeringVector,
    VectorFileError,
    load_bank,
    load_vector,
    save_bank,
)

if TYPE_CHECKING:
    from steer_away.data.prism import PrismData
    from steer_away.models import LanguageModel, ModelShape
    from steer_away.profiles import UserProfile
    from steer_away.scoring.base import ToxicityScorer

log = logging.getLogger(__name__)


ACTIVATIONS_FILE = "pair_activations.safetensors"
POPULATION_FILE = "population.safetensors"


@dataclass
class VectorBank:
    """A default vector (for users without their own) and per-user vectors."""

    default: SteeringVector | None
    users: dict[str, SteeringVector] = field(default_factory=dict)


def bank_files(path: str | Path, kind: str) -> list[Path]:
    """Every file `load_vector_bank(path, kind)` reads, in a stable order (what a result computed with
    the bank depends on: a sweep's cell keys hash them). Absent files are simply not listed."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not bank_kind(kind).per_user:
        return [path / POPULATION_FILE] if (path / POPULATION_FILE).is_file() else []
    folder = path / kind if (path / kind).is_dir() else path
    default = folder / POPULATION_FILE
    return ([default] if default.is_file() else []) + sorted((folder / "users").glob("*.safetensors"))


def load_vector_bank(path: str | Path, kind: str, lm: LanguageModel | None = None, *,
                     allow_other_model: bool = False) -> VectorBank:
    """The `kind` bank (see kinds.py) from a vector store, a bank folder or one file.

    A single file (.safetensors or a llama.cpp .gguf control vector) is a bank with only a default.
    Per-user vectors whose metadata names another kind are refused, so a Bradley–Terry method never
    runs on dislike vectors by accident.
    """
    path = Path(path)
    other = {"allow_other_model": allow_other_model}
    if path.is_file():
        return VectorBank(load_vector(path, lm, **other), {})
    if not path.is_dir():
        raise FileNotFoundError(f"no vector file or folder at {path}")
    if not bank_kind(kind).per_user:
        if (path / POPULATION_FILE).is_file():
            return VectorBank(SteeringVector.load(path / POPULATION_FILE, lm, **other), {})
        raise MissingVectorsError(f"{path} has no {POPULATION_FILE}")
    folder = path / kind if (path / kind).is_dir() else path
    if not (folder / "users").is_dir():
        raise MissingVectorsError(f"{path} holds no '{kind}' bank (expected {path / kind}/users/ or {path}/users/); "
                              f"build one with: steer-away vectors compose --mode {kind}")
    default, users = load_bank(folder, lm, **other)
    for user, vector in users.items():
        declared = vector.meta.get("kind")
        if declared not in (None, kind, *FOREIGN_VECTOR_KINDS):
            raise VectorFileError(f"{folder / 'users' / user}.safetensors is a '{declared}' vector, not '{kind}'")
    return VectorBank(default, users)


@dataclass(frozen=True)
class ExtractionSettings:
    """Which preference pairs to read activations from, and where in the model."""

    n_pairs: int = 200
    layers: Sequence[str] = (SEED_SPEC,)
    position: str = "last"
    min_margin: float = 0.0
    holdout: float = 0.3
    seed: int = 0
    batch_size: int = 8
    focus_users: Sequence[str] = ()  # users the evaluation steers: they get `focus_pairs` pairs first
    focus_pairs: int = 16


def extract_population(lm: LanguageModel, data: PrismData, settings: ExtractionSettings,
                       out: str | Path) -> PairActivations:
    """Training pairs (stratified by user) → per-pair activation differences and the population
    vector, saved in `out`. Prints how the pairs cover the users."""

    out = Path(out)
    split = PromptSplit(holdout=settings.holdout, seed=settings.seed, min_margin=settings.min_margin)
    train, _ = split.pairs(data.turns)
    split.save(out)  # calibrate and categories check read it back to pick held-out prompts
    pairs = sample_pairs(train, settings.n_pairs, seed=settings.seed, focus_users=settings.focus_users,
                         focus_pairs=settings.focus_pairs)
    if not pairs:
        raise InputError("no training pairs to extract from (is the data empty, or min_margin too high?)")
    log.info(f"training pairs: {pair_coverage(pairs, train, settings.focus_users).summary()}")
    depth = internals.num_layers(lm.model)
    layers = sorted({layer for spec in settings.layers for layer in parse_layer_spec(spec, depth)})
    acts = extract_pair_activations(lm, pairs, layers, position=settings.position, batch_size=settings.batch_size)
    save_pair_activations(acts, out / ACTIVATIONS_FILE, lm.shape)
    population_vector(acts, lm.shape, seed=settings.seed).save(out / POPULATION_FILE)
    return acts


def compose_bank(acts: PairActivations, shape: ModelShape, mode: str, profiles: Mapping[str, UserProfile],
                 out: str | Path, *, scorer: ToxicityScorer | None = None, shrinkage: float = 10.0, bt_k: int = 8,
                 bt_l2: float = 1.0) -> dict[str, SteeringVector]:
    """Per-user vectors of `mode` for the users that have a profile, saved as a bank in `out`."""

    if mode == DISLIKE:
        if scorer is None:
            raise InputError("dislike-weighted vectors need a toxicity scorer")
        gaps = -pair_toxicity_diffs(acts.pairs, scorer)[:, 0]
        vectors = dislike_vectors(acts, shape, gaps, shrinkage=shrinkage)
    elif mode == BT:
        vectors, _ = bt_vectors(acts, shape, k=bt_k, l2=bt_l2)
    else:
        raise InputError(f"compose mode must be one of {COMPOSED_KINDS}, got {mode!r}")
    vectors = {u: v for u, v in vectors.items() if u in profiles}
    for user, vector in vectors.items():
        vector.meta["sensitivity"] = profiles[user].sensitivity
    save_bank(out, population_vector(acts, shape), vectors)
    return vectors


def build_vector_store(lm: LanguageModel, data: PrismData, scorer: ToxicityScorer,
                       profiles: Mapping[str, UserProfile], root: str | Path, settings: ExtractionSettings, *,
                       modes: Sequence[str] = COMPOSED_KINDS, shrinkage: float = 10.0, bt_k: int = 8,
                       bt_l2: float = 1.0) -> Path:
    """Extract once and compose every mode into `root` (skipped when the store is already whole)."""
    root = Path(root)
    if all((root / m / POPULATION_FILE).is_file() for m in modes) and (root / ACTIVATIONS_FILE).is_file():
        return root
    acts = extract_population(lm, data, settings, root)
    for mode in modes:
        compose_bank(acts, lm.shape, mode, profiles, root / mode, scorer=scorer, shrinkage=shrinkage,
                     bt_k=bt_k, bt_l2=bt_l2)
    return root
