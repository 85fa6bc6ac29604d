"""A vector card: what a steering vector is, in numbers a user can check before steering with it.

For each layer: the vector's norm against the typical residual norm there (how hard α = 1 pushes),
and its cosine with a respectful-minus-toxic direction measured on a small contrast set we wrote
(`resources/respect_contrast.jsonl`, 20 prompts with one respectful and one toxic answer each).
Plus the tokens the vector promotes and suppresses most through the logit lens. A vector whose
cosine is negative on any layer points toward toxicity: the card says so in its verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from steer_away import internals
from steer_away.data.pairs import PreferencePair
from steer_away.errors import InputError
from steer_away.files import read_structured
from steer_away.resources import respect_contrast_path
from steer_away.steering.vectors.bank import POPULATION_FILE
from steer_away.steering.vectors.extract import extract_pair_activations
from steer_away.steering.vectors.kinds import COMPOSED_KINDS, POPULATION
from steer_away.steering.vectors.vector import SteeringVector, load_bank

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

CARD_FORMAT = "steer-away/vector-cards@1"


def contrast_pairs(path: str | Path | None = None) -> list[PreferencePair]:
    """The respectful-vs-toxic contrast set as pairs (respectful = chosen)."""

    path = Path(path or respect_contrast_path())
    pairs = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {line_no}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path} line {line_no}: expected an object")
        for key in ("id", "prompt", "respectful", "toxic"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise InputError(f"{path} line {line_no}: field '{key}' is missing or empty")
        pairs.append(PreferencePair(user_id="contrast", conversation_id=record["id"], turn=0,
                                    conversation_type="unguided", prompt=record["prompt"],
                                    chosen=record["respectful"], rejected=record["toxic"],
                                    chosen_score=100.0, rejected_score=1.0, opening=record["prompt"]))
    return pairs


def respectful_direction(lm: LanguageModel, layers: Sequence[int], position: str = "last",
                         pairs: Sequence[PreferencePair] | None = None) -> dict[int, torch.Tensor]:
    """Mean residual of respectful answers minus toxic ones, per layer, read where the vector was."""

    acts = extract_pair_activations(lm, list(pairs or contrast_pairs()), list(layers), position=position,
                                    progress=False)
    mean = acts.diffs.mean(0)
    return {layer: mean[i] for i, layer in enumerate(acts.layers)}


@dataclass
class LayerCard:
    layer: int
    norm: float
    residual_norm: float | None
    cosine_respectful: float

    @property
    def relative_norm(self) -> float | None:
        return self.norm / self.residual_norm if self.residual_norm else None


@dataclass
class VectorCard:
    name: str
    kind: str
    n_pairs: int | None
    layers: list[LayerCard]
    promoted: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)

    @property
    def toward_toxicity(self) -> bool:
        return any(layer.cosine_respectful < 0 for layer in self.layers)

    @property
    def verdict(self) -> str:
        cosines = [layer.cosine_respectful for layer in self.layers]
        negative = [layer.layer for layer in self.layers if layer.cosine_respectful < 0]
        if negative:
            return (f"⚠ POINTS TOWARD TOXICITY on layers {', '.join(map(str, negative))} "
                    f"(cosine with the respectful direction down to {min(cosines):+.2f}): steering 'toward "
                    "preferred' with it will make answers ruder")
        return f"points away from toxicity on every layer (cosine {min(cosines):+.2f} to {max(cosines):+.2f})"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "toward_toxicity": self.toward_toxicity, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, raw: dict) -> VectorCard:
        return cls(name=str(raw["name"]), kind=str(raw["kind"]), n_pairs=raw.get("n_pairs"),
                   layers=[LayerCard(**layer) for layer in raw["layers"]], promoted=list(raw.get("promoted", [])),
                   suppressed=list(raw.get("suppressed", [])))

    def markdown(self) -> str:
        lines = [f"**{self.name}** ({self.kind}, {self.n_pairs if self.n_pairs is not None else '?'} pairs): "
                 f"{self.verdict}", "",
                 "| layer | ‖v‖ | typical ‖h‖ | ‖v‖/‖h‖ | cos(v, respectful − toxic) |", "|---|---|---|---|---|"]
        for layer in self.layers:
            rel = layer.relative_norm
            lines.append(f"| {layer.layer} | {layer.norm:.2f} | "
                         f"{'-' if layer.residual_norm is None else f'{layer.residual_norm:.1f}'} | "
                         f"{'-' if rel is None else f'{rel:.3f}'} | {layer.cosine_respectful:+.3f} |")
        if self.promoted:
            lines += ["", f"logit lens: promotes {', '.join(f'`{t}`' for t in self.promoted)}; "
                          f"suppresses {', '.join(f'`{t}`' for t in self.suppressed)}"]
        return "\n".join(lines)


def _token_text(lm: LanguageModel, token_id: int) -> str:
    text = lm.tokenizer.decode([token_id]).strip()
    return text.replace("`", "'").replace("|", "/") or repr(lm.tokenizer.convert_ids_to_tokens(token_id))


def vector_card(vector: SteeringVector, lm: LanguageModel, name: str, *,
                respectful: dict[int, torch.Tensor] | None = None, top_k: int = 8) -> VectorCard:
    """The card of `vector`; pass `respectful` (from :func:`respectful_direction`) to reuse it across vectors."""
    layers = vector.layers
    position = str(vector.meta.get("position", "last"))
    respectful = respectful or respectful_direction(lm, layers, position)
    recorded = vector.meta.get("residual_norms")
    norms: dict = recorded if isinstance(recorded, dict) else {}
    rows = []
    lens = torch.zeros(0)
    for layer in layers:
        v = vector.directions[layer].float()
        r = respectful[layer].float().to(v.device)
        cosine = float(torch.nn.functional.cosine_similarity(v, r, dim=0)) if v.norm() > 0 and r.norm() > 0 else 0.0
        residual = norms.get(str(layer))
        rows.append(LayerCard(layer, float(v.norm()), None if residual is None else float(residual), cosine))
        unit = v / v.norm().clamp(min=1e-12)
        lens = unit if lens.numel() == 0 else lens + unit
    logits = internals.unembed_direction(lm.model, lens / max(len(layers), 1))
    promoted = [_token_text(lm, int(i)) for i in torch.topk(logits, top_k).indices]
    suppressed = [_token_text(lm, int(i)) for i in torch.topk(-logits, top_k).indices]
    n_pairs = vector.meta.get("n_pairs")
    return VectorCard(name=name, kind=str(vector.meta.get("kind", "vector")),
                      n_pairs=int(n_pairs) if isinstance(n_pairs, (int, float)) else None, layers=rows,
                      promoted=promoted, suppressed=suppressed)


def save_cards(cards: Sequence[VectorCard], path: str | Path, banks: Sequence[BankSummary] = ()) -> Path:
    path = Path(path)
    payload = {"format": CARD_FORMAT, "cards": [c.to_dict() for c in cards], "banks": [asdict(b) for b in banks]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def load_cards(path: str | Path) -> tuple[list[VectorCard], list[BankSummary]]:
    raw = read_structured(path, "vector-card file", "json", error=InputError)
    if not isinstance(raw, dict) or raw.get("format") != CARD_FORMAT:
        raise InputError(f"{path} is not a steer-away vector-card file (expected format '{CARD_FORMAT}')")
    return ([VectorCard.from_dict(c) for c in raw["cards"]],
            [BankSummary(str(b["bank"]), list(b["users"])) for b in raw.get("banks", [])])


@dataclass
class BankSummary:
    """Per-user vectors of one bank in brief: how hard they push and where they point."""

    bank: str
    users: list[dict[str, object]]  # user, sensitivity, relative_norm, cosine_mean, cosine_min

    def markdown(self) -> str:
        if not self.users:
            return f"**{self.bank}** bank: no per-user vectors"
        rel = sorted(float(str(u["relative_norm"])) for u in self.users if u["relative_norm"] is not None)
        cos = sorted(float(str(u["cosine_mean"])) for u in self.users)
        toward = sum(float(str(u["cosine_min"])) < 0 for u in self.users)
        rel_text = f"median {rel[len(rel) // 2]:.3f} ({rel[0]:.3f}–{rel[-1]:.3f})" if rel else "-"
        flag = f" — ⚠ {toward} of them point toward toxicity on some layer" if toward else ""
        return (f"**{self.bank}** bank, {len(self.users)} user vectors: ‖v‖/‖h‖ {rel_text}; mean cosine with "
                f"the respectful direction median {cos[len(cos) // 2]:+.3f} ({cos[0]:+.3f} to {cos[-1]:+.3f}){flag}")


def summarise_bank(bank: str, vectors: dict[str, SteeringVector], respectful: dict[int, torch.Tensor]
                   ) -> BankSummary:
    rows: list[dict[str, object]] = []
    for user, vector in sorted(vectors.items()):
        recorded = vector.meta.get("residual_norms")
        norms: dict = recorded if isinstance(recorded, dict) else {}
        cosines, relative = [], []
        for layer in vector.layers:
            v = vector.directions[layer].float()
            r = respectful[layer].float()
            cosines.append(float(torch.nn.functional.cosine_similarity(v, r, dim=0)) if v.norm() > 0 else 0.0)
            if str(layer) in norms:
                relative.append(float(v.norm()) / float(norms[str(layer)]))
        rows.append({"user": user, "sensitivity": vector.meta.get("sensitivity"),
                     "relative_norm": sum(relative) / len(relative) if relative else None,
                     "cosine_mean": sum(cosines) / len(cosines), "cosine_min": min(cosines)})
    return BankSummary(bank, rows)


def store_cards(lm: LanguageModel, root: str | Path, users: Sequence[str] | None = None
                ) -> tuple[list[VectorCard], list[BankSummary]]:
    """Cards for a vector store: the population vector and each bank's default, and a summary of the
    per-user vectors (only `users` when given). Written next to the vectors as cards.json."""
    root = Path(root)
    population = SteeringVector.load(root / POPULATION_FILE, lm)
    respectful = respectful_direction(lm, population.layers, str(population.meta.get("position", "last")))
    cards = [vector_card(population, lm, POPULATION, respectful=respectful)]
    summaries = []
    for mode in COMPOSED_KINDS:
        if not (root / mode / "users").is_dir():
            continue
        _, per_user = load_bank(root / mode, lm)
        if users is not None:
            per_user = {u: v for u, v in per_user.items() if u in set(users)}
        summaries.append(summarise_bank(mode, per_user, respectful))
    save_cards(cards, root / "cards.json", summaries)
    return cards, summaries
