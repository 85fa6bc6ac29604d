"""Sweep configs: the shared settings and, per method, a grid over any of its arguments.

    [sweep]
    name = "demo"
    ...
    [[methods]]
    name = ...                  # a registered method (`steer-away methods` lists them)
    alpha = [0.5, 1.0]          # a list is an axis of the grid
    gate = "prefill"            # a single value is fixed
    alpha = "calibration/calibration.json"   # the strength α `steer-away calibrate` recommended

Every key of a `[[methods]]` table other than `name` must be an argument of that method; the
values are checked by the method's own argument dataclass when the config is read.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from steer_away.data.prompts import HELDOUT, PromptFileError, prompt_source
from steer_away.errors import InputError
from steer_away.evaluation.utility.formats import DEFAULT_FORMAT, check_format
from steer_away.files import read_structured
from steer_away.models import check_device_name
from steer_away.steering.framework.arguments import MethodArgs, MethodArgsError
from steer_away.steering.registry import UnknownMethodError, get_method


class SweepConfigError(InputError):
    """A sweep config with an unknown key or a bad value; names the file and the key."""


def calibrated_alpha(path: str, base: Path, where: str) -> float:
    """The recommended α of a `steer-away calibrate` result (a path relative to the config's folder)."""
    file = Path(path) if Path(path).is_absolute() else base / path
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SweepConfigError(f"{where}: cannot read the calibration {file} ({err})") from None
    value = raw.get("recommended") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        summary = raw.get("summary", "") if isinstance(raw, dict) else ""
        raise SweepConfigError(f"{where}: {file} recommends no α ({summary or 'not a calibration file'})")
    return float(value)


def _strength_argument(method: str) -> str | None:
    """The argument that is `method`'s strength α (None: it has none, or the method is unknown,
    which `MethodGrid.expand` reports)."""
    try:
        strength = get_method(method).args.strength
    except UnknownMethodError:
        return None
    return strength.argument if strength is not None else None


@dataclass
class MethodGrid:
    """One `[[methods]]` table: a method and the values each of its arguments takes."""

    name: str
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def expand(self, where: str = "config") -> list[MethodArgs]:
        entry = get_method(self.name)
        keys = list(self.axes)
        combos = itertools.product(*(self.axes[k] for k in keys)) if keys else [()]
        return [entry.make_args(dict(zip(keys, combo)), where) for combo in combos]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.axes}


# [sweep] numbers and their ranges (None: unbounded on that side); checked on read with the key named.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "users_per_sensitivity": (1, None), "prompts_per_category": (1, None), "max_new_tokens": (1, None),
    "batch_size": (1, None), "extract_batch_size": (1, None), "n_pairs": (1, None), "focus_pairs": (0, None),
    "min_margin": (None, None), "holdout": (0, 1), "seed": (0, None), "bt_k": (1, None), "bt_l2": (0, None),
    "shrinkage": (0, None), "mmlu_limit": (1, None), "ray_workers": (1, None), "ppa_pairs": (0, None),
    "shard_batches": (1, None), "shard_retries": (0, None), "ray_gpus": (0, None),
}


def _check_value(name: str, value: object, hint: object, where: str) -> None:
    """One [sweep] value against its field's type and range (TOML gives ints, floats, strings, lists)."""
    text = str(hint)
    optional = "None" in text
    if value is None and optional:
        return
    if "list[str]" in text:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        kind = "a list of texts"
    elif text.startswith("int"):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif text.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    else:
        ok, kind = isinstance(value, str), "text"
    if not ok:
        raise SweepConfigError(f"{where}.{name} must be {kind}, got {value!r}")
    low, high = LIMITS.get(name, (None, None))
    if isinstance(value, (int, float)) and ((low is not None and value < low) or (high is not None and value > high)):
        span = f"at least {low:g}" if high is None else f"in {low:g}-{high:g}"
        raise SweepConfigError(f"{where}.{name} must be {span}, got {value!r}")


@dataclass
class SweepConfig:
    name: str = "sweep"
    out: str = "runs/sweep"
    model: str | None = None
    device: str = "auto"
    prism: str | None = None
    prompt_categories: str | None = None  # JSON override file for prompt categories
    steering_categories: str | None = None  # TOML of EADS / ACD categories
    scorer: str = "jigsaw-bilstm"
    users_per_sensitivity: int = 2
    prompts_per_category: int = 2
    max_new_tokens: int = 48
    batch_size: int = 8  # rows per forward pass when generating and scoring answers
    extract_batch_size: int = 8  # pairs per pass when extracting activations (long answers: small batches)
    n_pairs: int = 200
    focus_pairs: int = 16  # training pairs each steered user gets first (the rest spread over all users)
    min_margin: float = 0.0
    position: str = "last"
    holdout: float = 0.3
    seed: int = 0
    bt_k: int = 8
    bt_l2: float = 1.0
    shrinkage: float = 10.0
    prompts: str = HELDOUT  # heldout (of the PRISM data), shipped (our 220), or a prompt file
    mmlu: str | None = "fixture"  # fixture, hub, a JSONL path, or none
    utility: str = DEFAULT_FORMAT  # cloze (acc_norm) or letter (MMLU's A-D)
    mmlu_subjects: list[str] = field(default_factory=lambda: ["all"])
    mmlu_limit: int | None = 40
    ray_workers: int = 2  # Ray workers (one per device slot; each loads the model once)
    ray_gpus: float = 0.0  # GPUs each Ray worker takes (1 on a GPU cluster: a worker per GPU)
    shard_batches: int = 2  # batches of `batch_size` answers per shard of a cell, with Ray
    shard_retries: int = 1  # times a shard whose worker died goes to a fresh worker before it is left
    ppa_pairs: int = 300  # held-out pairs for personalised preference accuracy
    methods: list[MethodGrid] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> SweepConfig:
        known = {f.name for f in fields(cls)} - {"methods"}
        if "sweep" in raw:
            extra = sorted(set(raw) - {"sweep", "methods"})
            if extra:
                raise SweepConfigError(f"{source}: unknown table [{extra[0]}] (a config has [sweep] and [[methods]])")
            if not isinstance(raw["sweep"], dict):
                raise SweepConfigError(f"{source}: [sweep] must be a table")
        table = dict(raw.get("sweep", raw))
        methods_raw: list[Any] = raw.get("methods", table.pop("methods", [])) or []
        unknown = sorted(set(table) - known)
        if unknown:
            raise SweepConfigError(f"{source}: unknown key [sweep].{unknown[0]} (known: {', '.join(sorted(known))})")
        hints = {f.name: f.type for f in fields(cls)}  # as written: "int", "str | None", "list[str]"
        for name, value in table.items():
            _check_value(name, value, hints[name], f"{source}: [sweep]")
        if "device" in table:
            try:
                check_device_name(table["device"])
            except InputError as err:
                raise SweepConfigError(f"{source}: [sweep].device: {err}") from None
        if not isinstance(methods_raw, list):
            raise SweepConfigError(f"{source}: methods must be a list of [[methods]] tables")
        methods = []
        for index, item in enumerate(methods_raw):
            where = f"{source}: methods[{index}]"
            if not isinstance(item, dict):
                raise SweepConfigError(f"{where} must be a table")
            item = dict(item)
            name = item.pop("name", None)
            if not isinstance(name, str):
                raise SweepConfigError(f"{where}.name is missing")
            axes = {k: (list(v) if isinstance(v, list) else [v]) for k, v in item.items()}
            strength = _strength_argument(name)
            if strength in axes:
                axes[strength] = [calibrated_alpha(v, Path(source).parent, f"{where}.{strength}")
                                  if isinstance(v, str) and v.endswith(".json") else v for v in axes[strength]]
            for key, values in axes.items():
                if not values:
                    raise SweepConfigError(f"{where}.{key} is an empty list")
                for value in values:
                    if isinstance(value, float) and not math.isfinite(value):
                        raise SweepConfigError(f"{where}.{key} has a non-finite value {value!r}")
            grid = MethodGrid(name, axes)
            try:
                grid.expand(f"{where} ({name})")
            except (UnknownMethodError, MethodArgsError) as err:
                raise SweepConfigError(str(err) if str(err).startswith(source) else f"{where}: {err}") from None
            methods.append(grid)
        try:
            check_format(table.get("utility", DEFAULT_FORMAT), f"{source}: [sweep].utility")
        except InputError as err:
            raise SweepConfigError(str(err)) from None
        try:
            table["prompts"] = prompt_source(table.get("prompts", HELDOUT), Path(source).parent)
        except PromptFileError as err:
            raise SweepConfigError(f"{source}: [sweep].{err}") from None
        config = cls(**table, methods=methods)
        if not config.methods:
            raise SweepConfigError(f"{source}: no [[methods]] to sweep")
        if config.batch_size < 1 or config.max_new_tokens < 1:
            raise SweepConfigError(f"{source}: batch_size and max_new_tokens must be >= 1")
        return config

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepConfig:
        raw = read_structured(path, "sweep config", "toml", SweepConfigError)
        if not isinstance(raw, dict):
            raise SweepConfigError(f"{path}: expected a [sweep] table and [[methods]]")
        return cls.from_dict(raw, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The same config as from_dict reads it (for Ray workers, which rebuild it)."""
        return {"sweep": {k: v for k, v in asdict(self).items() if k != "methods"},
                "methods": [m.to_dict() for m in self.methods]}

    @property
    def run_dir(self) -> Path:
        return Path(self.out)
