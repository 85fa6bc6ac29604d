"""Files shipped with the package: synthetic fixtures and the default steering-category config."""

from pathlib import Path

RESOURCES = Path(__file__).parent


def prism_fixture_dir() -> Path:
    """Our synthetic PRISM-shaped data (written by scripts/make_fixture.py; no real PRISM text)."""
    return RESOURCES / "prism_fixture"


def mmlu_fixture_path() -> Path:
    """A small MMLU-format question set we wrote ourselves, for tests and the demo."""
    return RESOURCES / "mmlu_fixture.jsonl"


def steering_categories_path() -> Path:
    return RESOURCES / "steering_categories.toml"


def demo_sweep_path() -> Path:
    return RESOURCES / "demo_sweep.toml"
