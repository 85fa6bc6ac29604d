"""Files shipped with the package: synthetic fixtures and the default steering-category config."""

from pathlib import Path

RESOURCES = Path(__file__).parent


def prism_fixture_dir() -> Path:
    """A tiny extreme-contrast PRISM-shaped set for machinery tests (scripts/make_fixture.py; synthetic)."""
    return RESOURCES / "prism_fixture"


def mmlu_fixture_path() -> Path:
    """A small MMLU-format question set we wrote ourselves, for tests and the demo."""
    return RESOURCES / "mmlu_fixture.jsonl"


def steering_categories_path() -> Path:
    return RESOURCES / "steering_categories.toml"


def demo_sweep_path() -> Path:
    return RESOURCES / "demo_sweep.toml"


def respect_contrast_path() -> Path:
    """20 prompts, each with a respectful and a toxic answer we wrote: the reference direction of vector cards."""
    return RESOURCES / "respect_contrast.jsonl"


def eval_prompts_path() -> Path:
    """220 opening prompts we wrote for evaluation (55 per prompt category, PRISM's topic mix; synthetic)."""
    return RESOURCES / "eval_prompts.jsonl"


def relevance_pairs_path() -> Path:
    """64 prompts we wrote, each with an on-request answer and an off-topic, refusing or evasive one: the check
    of the relevance score."""
    return RESOURCES / "relevance_pairs.jsonl"


def refusal_labels_path() -> Path:
    """Answers labelled refusal or not by hand (ours, and the embedded model's own from a demo run): the check
    of the refusal rule."""
    return RESOURCES / "refusal_labels.jsonl"
