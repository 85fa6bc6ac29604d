"""What every cell of a sweep shares, built once in its run folder: user profiles and vectors."""

from __future__ import annotations

import logging

from rich.markup import escape

from steer_away.data.prism import load_prism
from steer_away.errors import InputError
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.models import LanguageModel, load_model
from steer_away.profiles import build_profiles, load_profiles, pick_users, profiles_scorer, save_profiles
from steer_away.scoring import make_scorer
from steer_away.scoring.hf_classifier import hub_pin
from steer_away.steering.registry import get_method
from steer_away.steering.vectors.bank import ExtractionSettings, build_vector_store
from steer_away.steering.vectors.card import store_cards

log = logging.getLogger(__name__)


def vector_layer_specs(config: SweepConfig) -> list[str]:
    """Layer specs of every method that reads vectors (their activations are extracted once)."""
    specs = set()
    for grid in config.methods:
        entry = get_method(grid.name)
        for args in grid.expand():
            if entry.needs_of(args).vector_bank is None:
                continue
            spec = entry.extraction_layers(args)
            if spec is not None:
                specs.add(spec)
    return sorted(specs)


def prepare(config: SweepConfig, lm: LanguageModel | None = None) -> None:
    """Profiles (scored once, cached) and, if any method needs them, the vector store."""

    run = config.run_dir
    run.mkdir(parents=True, exist_ok=True)
    data = load_prism(config.prism)
    if data.report.skipped:
        log.warning(f"[yellow]PRISM: {escape(data.report.summary())}[/yellow]")
    scorer = make_scorer(config.scorer, cache_path=run / "scores.sqlite")
    profiles_path = run / "profiles.json"
    if not profiles_path.is_file():
        save_profiles(build_profiles(data, scorer), profiles_path, scorer.backend)
    elif (built_by := profiles_scorer(profiles_path)) != scorer.backend:
        # Profiles and the vectors built on them would mix two scorers (or an old revision of one).
        recorded, current = hub_pin(built_by or ""), hub_pin(scorer.backend)  # resuming needs the recorded revision
        pin = recorded if current and recorded and recorded.rpartition("@")[0] == current.rpartition("@")[0] else current
        pinning = f" (pinning {pin} in the config keeps a resumed sweep on the same revision)" if pin else ""
        raise InputError(f"{profiles_path} was scored by {built_by or 'an unrecorded scorer'}, this sweep scores with "
                         f"{scorer.backend}: give the sweep another run folder, or delete {profiles_path} and "
                         f"{run / 'vectors'}{pinning}")
    specs = vector_layer_specs(config)
    if not specs:
        return
    lm = lm or load_model(config.model, device=config.device)
    profiles = load_profiles(profiles_path)
    settings = ExtractionSettings(n_pairs=config.n_pairs, layers=tuple(specs), position=config.position,
                                  min_margin=config.min_margin, holdout=config.holdout, seed=config.seed,
                                  batch_size=config.extract_batch_size,
                                  focus_users=tuple(pick_users(profiles, config.users_per_sensitivity)),
                                  focus_pairs=config.focus_pairs)
    build_vector_store(lm, data, scorer, profiles, run / "vectors", settings,
                       shrinkage=config.shrinkage, bt_k=config.bt_k, bt_l2=config.bt_l2)
    if not (run / "vectors" / "cards.json").is_file():
        cards, banks = store_cards(lm, run / "vectors", settings.focus_users)
        for card in cards:
            colour = "red" if card.toward_toxicity else "green"
            log.info(f"[{colour}]vector card, {card.name}: {escape(card.verdict)}[/{colour}]")
        for bank in banks:
            log.info(escape(bank.markdown().replace("**", "")))
