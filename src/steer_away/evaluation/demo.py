"""The demo (`steer-away demo`): its sweep config and the preface its report opens with, saying
what the run shows and what it does not."""

from __future__ import annotations

from steer_away.data.prompts import HELDOUT, SHIPPED
from steer_away.evaluation.metrics.functions import smallest_detectable_change
from steer_away.evaluation.sweep import SweepConfig
from steer_away.evaluation.utility.mmlu import load_mmlu
from steer_away.resources import demo_sweep_path

DEMO_TITLE = "steer-away demo: steering toward each user's preferred toxicity"

DEMO_PREFACE = (
    "**What this run does.** It answers {prompts} opening prompts ({source}) for {users} users of our synthetic "
    "PRISM stand-in ({per} users per sensitivity group, chosen for having the most rated turns) with the embedded "
    "SmolLM2-135M-Instruct, unsteered and under each steering method, scores every answer with the offline "
    "Jigsaw classifier, and measures how far each answer's toxicity is from the toxicity that user preferred "
    "in their own choices. Intervals are 95 % bootstrap intervals clustered by user and by prompt.\n\n"
    "**What it does not show.** These are not PRISM results: the users, their choices and the answers they "
    "rated are synthetic (written to follow PRISM's published statistics), so preferred toxicity is low for "
    "almost everyone and differences between users are small, as on PRISM. A 135M model is not Llama-3.1-8B, "
    "the scorer is not Perspective, and {questions} multiple-choice questions ({utility}) can only detect changes "
    "of {detectable} points or more. Nothing here "
    "says users would prefer the steered answers; read the answers at the end before trusting any number.\n")


PROMPT_SOURCES = {SHIPPED: "our evaluation set, written in PRISM's topic mix; none trains a vector",
                  HELDOUT: "held-out PRISM opening prompts; none trains a vector"}
UTILITY_TEXT = {"cloze": "cloze form, acc_norm", "letter": "letter format"}


def demo_config(out: str, *, quick: bool = False, prism: str | None = None, prompts: str | None = None
                ) -> SweepConfig:
    """The shipped demo sweep writing to `out`; `quick` shrinks it to a smoke test. Other PRISM data
    (`prism`, e.g. 'hub') brings its own held-out opening prompts unless `prompts` names a set."""
    config = SweepConfig.from_toml(demo_sweep_path())
    config.out = out
    if prism is not None:
        config.prism = prism
        config.prompts = HELDOUT
    if prompts is not None:
        config.prompts = prompts
    if quick:
        config.users_per_sensitivity, config.prompts_per_category, config.max_new_tokens = 1, 1, 24
        config.mmlu_limit, config.n_pairs = 8, 48
    return config


def demo_preface(config: SweepConfig) -> str:
    """The preface with this config's numbers: users, prompts and what its question set can detect."""
    questions = len(load_mmlu(None, limit=config.mmlu_limit)) if config.mmlu == "fixture" else config.mmlu_limit or 0
    return DEMO_PREFACE.format(users=3 * config.users_per_sensitivity, prompts=4 * config.prompts_per_category,
                               source=PROMPT_SOURCES.get(config.prompts, f"from {config.prompts}"),
                               per=config.users_per_sensitivity, questions=questions,
                               utility=UTILITY_TEXT.get(config.utility, config.utility),
                               detectable=f"{100 * smallest_detectable_change(questions):.0f}" if questions else "-")
