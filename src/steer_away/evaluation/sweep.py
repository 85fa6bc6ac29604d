"""Sweeps over method × α × layers, resumable, locally or spread over a Ray cluster.

A sweep first prepares what every cell shares (profiles, vectors, the evaluation set) in its run
folder, then evaluates each cell: generate answers for every (user, prompt) row, score them,
measure distance to the user's preferred toxicity and perplexity, and answer MMLU under the same
steering. Rows are written to the results store batch by batch, so a killed sweep resumes where it
stopped and a changed config computes only the cells it adds.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from rich.markup import escape

from steer_away.console import console
from steer_away.evaluation.metrics import finite, mean_by, wilson_interval
from steer_away.evaluation.store import AnswerRecord, MMLURecord, ResultsStore
from steer_away.files import read_structured

METHOD_NAMES = ("unsteered", "caa-population", "caa-dislike", "caa-bt", "eads", "acd")


class SweepConfigError(ValueError):
    """A sweep config with an unknown key or a bad value; names the file and the key."""


@dataclass
class MethodSpec:
    name: str
    alphas: list[float | None] = field(default_factory=lambda: [None])
    layers: list[str] = field(default_factory=lambda: ["seed"])  # CAA only
    gate: str = "all"  # CAA only: all, prefill, or K
    relative: bool = False  # CAA only


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
    batch_size: int = 8
    n_pairs: int = 200
    position: str = "last"
    holdout: float = 0.3
    seed: int = 0
    bt_k: int = 8
    bt_l2: float = 1.0
    mmlu: str | None = "fixture"  # fixture, hub, a JSONL path, or none
    mmlu_subjects: list[str] = field(default_factory=lambda: ["all"])
    mmlu_limit: int | None = 40
    ray_workers: int = 2
    methods: list[MethodSpec] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> SweepConfig:
        known = {f.name for f in fields(cls)}
        table = dict(raw.get("sweep", raw))
        methods_raw = raw.get("methods", table.pop("methods", []))
        unknown = sorted(set(table) - known)
        if unknown:
            raise SweepConfigError(f"{source}: unknown key [sweep].{unknown[0]} (known: {', '.join(sorted(known))})")
        methods = []
        spec_keys = {f.name for f in fields(MethodSpec)}
        for index, item in enumerate(methods_raw):
            bad = sorted(set(item) - spec_keys)
            if bad:
                raise SweepConfigError(f"{source}: unknown key methods[{index}].{bad[0]}")
            if item.get("name") not in METHOD_NAMES:
                raise SweepConfigError(f"{source}: methods[{index}].name must be one of {METHOD_NAMES}, "
                                       f"got {item.get('name')!r}")
            alphas = item.get("alphas", [None])
            for alpha in alphas:
                if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                          or not math.isfinite(alpha)):
                    raise SweepConfigError(f"{source}: methods[{index}].alphas has a non-finite value {alpha!r}")
            methods.append(MethodSpec(**{**item, "alphas": [None if a is None else float(a) for a in alphas]}))
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

    @property
    def run_dir(self) -> Path:
        return Path(self.out)


@dataclass(frozen=True)
class EvalRow:
    row_id: str
    user_id: str
    prompt_id: str
    prompt: str
    category: str


@dataclass(frozen=True)
class Cell:
    key: str
    method: str
    alpha: float | None
    layers: str
    spec: MethodSpec

    @property
    def label(self) -> str:
        alpha = "-" if self.alpha is None else f"{self.alpha:g}"
        return f"{self.method} α={alpha}" + (f" L={self.layers}" if self.method.startswith("caa") else "")


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.is_file() else "none"


# --- preparation: profiles and vectors shared by every cell -----------------------------------


def _extraction_layers(config: SweepConfig, depth: int) -> list[int]:
    from steer_away import internals

    specs = {layer for m in config.methods if m.name.startswith("caa") for layer in m.layers} or {"seed"}
    return sorted({l for spec in specs for l in internals.parse_layers(spec, depth)})


def prepare(config: SweepConfig, lm: object | None = None) -> None:
    """Build (once) the profiles and vector banks the sweep needs, in its run folder."""
    from steer_away.data.prism import load_prism, preference_pairs, sample_pairs, split_pairs
    from steer_away.models import load_model
    from steer_away.profiles import build_profiles, load_profiles, save_profiles
    from steer_away.profiles.build import pair_toxicity_diffs
    from steer_away.scoring import make_scorer
    from steer_away.steering.compose import bt_vectors, dislike_vectors, population_vector
    from steer_away.steering.extract import extract_pair_activations, save_pair_activations
    from steer_away.steering.vectors import save_bank

    run = config.run_dir
    run.mkdir(parents=True, exist_ok=True)
    data = load_prism(config.prism)
    if data.report.skipped:
        console.print(f"[yellow]PRISM: {escape(data.report.summary())}[/yellow]")
    scorer = make_scorer(config.scorer, cache_path=run / "scores.sqlite")
    profiles_path = run / "profiles.json"
    if not profiles_path.is_file():
        save_profiles(build_profiles(data, scorer), profiles_path, scorer.backend)
    profiles = load_profiles(profiles_path)
    needs_vectors = any(m.name.startswith("caa") for m in config.methods)
    vec_dir = run / "vectors"
    if not needs_vectors or (vec_dir / "bt" / "population.safetensors").is_file():
        return
    lm = lm or load_model(config.model, device=config.device)
    shape = lm.shape
    train, _ = split_pairs(preference_pairs(data.turns), holdout=config.holdout, seed=config.seed)
    pairs = sample_pairs(train, config.n_pairs, seed=config.seed)
    acts = extract_pair_activations(lm, pairs, _extraction_layers(config, shape[2]), position=config.position,
                                    batch_size=config.batch_size)
    save_pair_activations(acts, vec_dir / "pair_activations.safetensors", shape)
    population = population_vector(acts, shape, seed=config.seed)
    population.save(vec_dir / "population.safetensors")
    gaps = -pair_toxicity_diffs(acts.pairs, scorer)[:, 0]
    dislike = {u: v for u, v in dislike_vectors(acts, shape, gaps).items() if u in profiles}
    save_bank(vec_dir / "dislike", population, dislike)
    bt, _ = bt_vectors(acts, shape, k=config.bt_k, l2=config.bt_l2)
    save_bank(vec_dir / "bt", population, {u: v for u, v in bt.items() if u in profiles})


# --- the evaluation context: everything a cell needs, rebuilt identically on any worker --------


class EvalContext:
    def __init__(self, config: SweepConfig, lm: object | None = None) -> None:
        from steer_away.data.categories import CategoryRule
        from steer_away.data.prism import load_prism, preference_pairs, split_pairs
        from steer_away.models import load_model
        from steer_away.profiles import load_profiles
        from steer_away.scoring import make_scorer

        self.config = config
        run = config.run_dir
        self.lm = lm or load_model(config.model, device=config.device)
        self.scorer = make_scorer(config.scorer, cache_path=run / "scores.sqlite")
        self.profiles = load_profiles(run / "profiles.json")
        data = load_prism(config.prism)
        self.data = data
        _, self.heldout_pairs = split_pairs(preference_pairs(data.turns), holdout=config.holdout, seed=config.seed)
        rule = CategoryRule.from_file(config.prompt_categories)
        self.sensitivity = {u: p.sensitivity for u, p in self.profiles.items()}
        self.users = self._pick_users()
        self.rows = self._pick_rows(rule)
        self.mmlu = self._load_mmlu()
        self._banks: dict[str, tuple] = {}
        self.fingerprint = hashlib.sha1(json.dumps({
            "model": self.lm.model_id, "rows": [r.row_id for r in self.rows], "mmlu": [q.question_id for q in self.mmlu],
            "max_new_tokens": config.max_new_tokens, "scorer": self.scorer.backend,
            "profiles": _file_digest(run / "profiles.json"),
            "vectors": _file_digest(run / "vectors" / "pair_activations.safetensors"),
            "steering_categories": _file_digest(Path(config.steering_categories)) if config.steering_categories else "",
        }, sort_keys=True).encode()).hexdigest()[:12]

    def _pick_users(self) -> list[str]:
        chosen = []
        for sensitivity in ("strict", "moderate", "tolerant"):
            ids = sorted(u for u, p in self.profiles.items() if p.sensitivity == sensitivity)
            chosen += ids[: self.config.users_per_sensitivity]
        return chosen

    def _pick_rows(self, rule: object) -> list[EvalRow]:
        """Every evaluation user answers the same prompts: turn-0 prompts of held-out conversations,
        `prompts_per_category` from each category."""
        heldout = {p.conversation_id for p in self.heldout_pairs}
        by_category: dict[str, dict[str, str]] = {}
        for turn in self.data.turns:
            if turn.turn != 0 or turn.conversation_id not in heldout:
                continue
            category = rule.categorise(turn.prompt, turn.conversation_type,  # type: ignore[attr-defined]
                                       conversation_id=turn.conversation_id)
            prompt_id = hashlib.sha1(turn.prompt.encode()).hexdigest()[:10]
            by_category.setdefault(category, {})[prompt_id] = turn.prompt
        rng = random.Random(self.config.seed)
        rows = []
        for category, prompts in sorted(by_category.items()):
            ids = sorted(prompts)
            for prompt_id in sorted(rng.sample(ids, min(self.config.prompts_per_category, len(ids)))):
                for user in self.users:
                    rows.append(EvalRow(f"{user}|{prompt_id}", user, prompt_id, prompts[prompt_id], category))
        return rows

    def _load_mmlu(self) -> list:
        from steer_away.evaluation.mmlu import load_mmlu

        source = self.config.mmlu
        if source in (None, "none"):
            return []
        return load_mmlu(None if source == "fixture" else source, subjects=self.config.mmlu_subjects,
                         limit=self.config.mmlu_limit)

    def bank(self, kind: str) -> tuple:
        from steer_away.steering.vectors import load_bank

        if kind not in self._banks:
            folder = self.config.run_dir / "vectors" / kind
            self._banks[kind] = load_bank(folder, self.lm)
        return self._banks[kind]

    def population(self) -> object:
        from steer_away.steering.vectors import SteeringVector

        if "population" not in self._banks:
            path = self.config.run_dir / "vectors" / "population.safetensors"
            self._banks["population"] = (SteeringVector.load(path, self.lm), {})
        return self._banks["population"][0]

    def method(self, cell: Cell) -> object:
        return METHOD_BUILDERS[cell.method](self, cell)

    def cells(self) -> list[Cell]:
        out = []
        for spec in self.config.methods:
            layer_specs = spec.layers if spec.name.startswith("caa") else ["-"]
            alphas = spec.alphas if spec.name != "unsteered" else [None]
            for layers in layer_specs:
                for alpha in alphas:
                    ident = {"method": spec.name, "alpha": alpha, "layers": layers, "gate": spec.gate,
                             "relative": spec.relative, "fingerprint": self.fingerprint}
                    key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
                    out.append(Cell(key=key, method=spec.name, alpha=alpha, layers=layers, spec=spec))
        return out


def _caa(bank_kind: str | None) -> Callable[[EvalContext, Cell], object]:
    def build(ctx: EvalContext, cell: Cell) -> object:
        from steer_away import internals
        from steer_away.steering.activation import ActivationSteering

        layers = internals.parse_layers(cell.layers, internals.num_layers(ctx.lm.model))
        gate = int(cell.spec.gate) if str(cell.spec.gate).isdigit() else cell.spec.gate
        if bank_kind is None:
            vectors: object = ctx.population()
            default = None
        else:
            default, vectors = ctx.bank(bank_kind)
        return ActivationSteering(vectors, alpha=1.0, layers=layers, gate=gate, relative=cell.spec.relative,
                                  default=default, name=cell.method)

    return build


def _logit(kind: str) -> Callable[[EvalContext, Cell], object]:
    def build(ctx: EvalContext, cell: Cell) -> object:
        from steer_away.steering.logits import LogitSteering, load_categories

        return LogitSteering(kind, load_categories(ctx.config.steering_categories), ctx.profiles, name=cell.method)

    return build


def _unsteered(ctx: EvalContext, cell: Cell) -> object:
    from steer_away.steering.base import Unsteered

    return Unsteered()


METHOD_BUILDERS: dict[str, Callable[[EvalContext, Cell], object]] = {
    "unsteered": _unsteered,
    "caa-population": _caa(None),
    "caa-dislike": _caa("dislike"),
    "caa-bt": _caa("bt"),
    "eads": _logit("eads"),
    "acd": _logit("acd"),
}


# --- one cell -----------------------------------------------------------------------------------


def compute_cell(ctx: EvalContext, cell: Cell, done_rows: set[str], done_questions: set[str],
                 progress: Callable[[int], None] | None = None) -> Iterator[tuple[list[AnswerRecord], list[MMLURecord]]]:
    """Yield (answers, mmlu) batches for what is not done yet; the caller stores each at once."""
    from steer_away.evaluation.metrics import toxicity_distance
    from steer_away.evaluation.mmlu import mmlu_predictions
    from steer_away.evaluation.perplexity import answer_perplexities
    from steer_away.generation import GenerationConfig, generate
    from steer_away.steering.base import RowSteering

    method = ctx.method(cell)
    config = GenerationConfig(max_new_tokens=ctx.config.max_new_tokens)
    todo = [r for r in ctx.rows if r.row_id not in done_rows]
    # Methods that steer everyone alike answer each prompt once; the answer serves every user.
    if method.personalised:
        units = [(r.prompt, r.user_id, [r]) for r in todo]
    else:
        grouped: dict[str, list[EvalRow]] = {}
        for r in todo:
            grouped.setdefault(r.prompt, []).append(r)
        units = [(prompt, None, rows) for prompt, rows in grouped.items()]
    size = ctx.config.batch_size
    for start in range(0, len(units), size):
        chunk = units[start:start + size]
        steer = [RowSteering(user, cell.alpha) for _, user, _ in chunk]
        outs = generate(ctx.lm, [p for p, _, _ in chunk], method=method, rows=steer, config=config)
        texts = [o.text for o in outs]
        tox = ctx.scorer.score(texts)
        ppl = answer_perplexities(ctx.lm, [p for p, _, _ in chunk], texts, batch_size=size)
        records = []
        for (prompt, _, rows), out, t, p in zip(chunk, outs, tox, ppl):
            for row in rows:
                preferred = np.asarray(ctx.profiles[row.user_id].preferred_toxicity)
                records.append(AnswerRecord(row.row_id, row.user_id, row.prompt_id, row.category, prompt, out.text,
                                            t.tolist(), float(toxicity_distance(t, preferred)[0]), p,
                                            len(out.token_ids)))
        yield records, []
        if progress:
            progress(len(records))
    questions = [q for q in ctx.mmlu if q.question_id not in done_questions]
    users = ctx.users or [None]
    for start in range(0, len(questions), size * 2):
        chunk = questions[start:start + size * 2]
        owners = [users[(start + i) % len(users)] for i in range(len(chunk))]
        rows = [RowSteering(u, cell.alpha) for u in owners]
        predicted = mmlu_predictions(ctx.lm, chunk, method, rows, batch_size=size * 2)
        yield [], [MMLURecord(q.question_id, u or "", p, p == q.answer) for q, u, p in zip(chunk, owners, predicted)]
        if progress:
            progress(len(chunk))


def summarise(answers: list[AnswerRecord], mmlu: list[MMLURecord], sensitivity: dict[str, str] | None = None) -> dict:
    """Cell figures; `sensitivity` (user -> strict/moderate/tolerant) adds the per-group breakdown."""
    distances = [a.distance for a in answers]
    groups = [(sensitivity or {}).get(a.user_id, "unknown") for a in answers]
    ppl = finite(a.perplexity for a in answers)
    correct = sum(r.correct for r in mmlu)
    low, high = wilson_interval(correct, len(mmlu))
    users = {a.user_id for a in answers}
    return {
        "n": len(answers), "users": len(users),
        "mae": float(np.mean(distances)) if distances else float("nan"),
        "mae_by_category": mean_by(distances, [a.category for a in answers]),
        "mae_by_sensitivity": mean_by(distances, groups),
        "toxicity_by_sensitivity": mean_by([a.toxicity[0] for a in answers], groups),
        "ppl_mean": float(ppl.mean()) if ppl.size else float("nan"),
        "ppl_median": float(np.median(ppl)) if ppl.size else float("nan"),
        "empty_answers": sum(1 for a in answers if not a.answer.strip()),
        "mean_tokens": float(np.mean([a.n_tokens for a in answers])) if answers else 0.0,
        "toxicity_mean": float(np.mean([a.toxicity[0] for a in answers])) if answers else float("nan"),
        "mmlu_n": len(mmlu), "mmlu_acc": correct / len(mmlu) if mmlu else float("nan"),
        "mmlu_ci": [low, high],
    }


# --- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    cells: list[Cell]
    computed: list[str]
    skipped: list[str]
    fingerprint: str
    seconds: float


def run_sweep(config: SweepConfig, *, ray_address: str | None = None, lm: object | None = None,
              show_progress: bool = True) -> SweepResult:
    """Evaluate every cell not yet done; `ray_address` ('local' or 'ray://…') spreads cells over Ray."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    prepare(config, lm)
    ctx = EvalContext(config, lm)
    store = ResultsStore(config.run_dir / "results.sqlite")
    cells = ctx.cells()
    for cell in cells:
        store.register_cell(cell.key, cell.method, cell.alpha, cell.layers,
                            {**asdict(cell.spec), "fingerprint": ctx.fingerprint, "label": cell.label})
    pending = [c for c in cells if store.cell_status(c.key) != "done"]
    skipped = [c.key for c in cells if c not in pending]
    if skipped:
        console.print(f"{len(skipped)} of {len(cells)} cells already done; computing {len(pending)}")
    run_id = uuid.uuid4().hex[:8]
    per_cell = len(ctx.rows) + len(ctx.mmlu)
    bar = tqdm(total=per_cell * len(pending), desc="sweep", unit="item", disable=not show_progress)
    if ray_address:
        _run_on_ray(config, ctx, store, pending, run_id, bar, ray_address)
    else:
        for cell in pending:
            bar.set_postfix_str(cell.label)
            done_rows, done_q = store.done_rows(cell.key), store.done_questions(cell.key)
            bar.update(len(done_rows) + len(done_q))
            for answers, mmlu in compute_cell(ctx, cell, done_rows, done_q, progress=bar.update):
                store.put_answers(cell.key, answers, run_id)
                store.put_mmlu(cell.key, mmlu, run_id)
            store.finish_cell(cell.key, summarise(store.answers(cell.key), store.mmlu(cell.key), ctx.sensitivity))
    bar.close()
    store.close()
    return SweepResult(cells, [c.key for c in pending], skipped, ctx.fingerprint, time.perf_counter() - start)


def _run_on_ray(config: SweepConfig, ctx: EvalContext, store: ResultsStore, pending: list[Cell], run_id: str,
                bar: object, address: str) -> None:
    """Each Ray actor builds its own EvalContext from the config; the driver alone writes the store."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--ray needs Ray: pip install 'steer-away[ray]'") from err
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=max(1, config.ray_workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class CellWorker:
        def __init__(self, cfg: dict) -> None:
            import torch

            torch.set_num_threads(1)
            self.ctx = EvalContext(SweepConfig.from_dict(cfg))

        def run(self, cell: Cell, done_rows: set[str], done_q: set[str]) -> list:
            return list(compute_cell(self.ctx, cell, done_rows, done_q))

    raw = {"sweep": {k: v for k, v in asdict(config).items() if k != "methods"},
           "methods": [asdict(m) for m in config.methods]}
    workers = [CellWorker.remote(raw) for _ in range(max(1, min(config.ray_workers, len(pending))))]
    futures = {}
    queue = list(pending)
    for worker in workers:
        if queue:
            cell = queue.pop(0)
            futures[worker.run.remote(cell, store.done_rows(cell.key), store.done_questions(cell.key))] = (worker, cell)
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        worker, cell = futures.pop(ready[0])
        for answers, mmlu in ray.get(ready[0]):
            store.put_answers(cell.key, answers, run_id)
            store.put_mmlu(cell.key, mmlu, run_id)
            bar.update(len(answers) + len(mmlu))  # type: ignore[attr-defined]
        store.finish_cell(cell.key, summarise(store.answers(cell.key), store.mmlu(cell.key), ctx.sensitivity))
        if queue:
            nxt = queue.pop(0)
            futures[worker.run.remote(nxt, store.done_rows(nxt.key), store.done_questions(nxt.key))] = (worker, nxt)


def compute_ppa(ctx: EvalContext, max_pairs: int = 300) -> dict[str, float]:
    """PPA on held-out pairs (cached in the run folder per fingerprint)."""
    from steer_away import internals
    from steer_away.data.prism import sample_pairs
    from steer_away.evaluation.ppa import ppa_table
    from steer_away.profiles.build import pair_toxicity_diffs
    from steer_away.steering.extract import extract_pair_activations

    cache = ctx.config.run_dir / "ppa.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("fingerprint") == ctx.fingerprint:
            return saved["ppa"]
    if not (ctx.config.run_dir / "vectors" / "population.safetensors").is_file():
        return {}
    population = ctx.population()
    pairs = [p for p in sample_pairs(ctx.heldout_pairs, max_pairs, seed=ctx.config.seed) if p.user_id in ctx.profiles]
    if not pairs:
        return {}
    layers = internals.check_layers(population.layers, internals.num_layers(ctx.lm.model))
    acts = extract_pair_activations(ctx.lm, pairs, layers, position=ctx.config.position,
                                    batch_size=ctx.config.batch_size)
    diffs = acts.diffs.double().numpy()

    def stack(vector: object) -> np.ndarray:
        return np.stack([vector.directions[l].double().numpy() for l in layers])  # type: ignore[attr-defined]

    personal = {kind: {u: stack(v) for u, v in ctx.bank(kind)[1].items()} for kind in ("dislike", "bt")}
    gaps = -pair_toxicity_diffs(pairs, ctx.scorer)[:, 0]
    table = ppa_table(diffs, [p.user_id for p in pairs], gaps, stack(population), personal, seed=ctx.config.seed)
    cache.write_text(json.dumps({"fingerprint": ctx.fingerprint, "ppa": table}, indent=1))
    return table
