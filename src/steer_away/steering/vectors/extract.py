"""Recording residual activations on preference pairs and taking their difference of means (CAA).

v_l = mean h_l(prompt + chosen) − mean h_l(prompt + rejected), read at the last response token
(default) or averaged over the response tokens. Rows are left-padded in batches; because position
ids follow the attention mask, a padded batch gives the same activations as one row at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from tqdm.auto import tqdm

from steer_away import internals
from steer_away.chat import encode, render_chat
from steer_away.data.pairs import PreferencePair
from steer_away.errors import InputError
from steer_away.models import LanguageModel, ModelShape
from steer_away.steering.vectors.vector import SteeringVector

POSITIONS = ("last", "mean")


@dataclass
class PairActivations:
    """Per-pair activation differences (pairs, layers, hidden) and what they were read from."""

    diffs: torch.Tensor
    layers: list[int]
    pairs: list[PreferencePair]
    residual_norms: dict[int, float]  # mean ‖h_l‖ at the read positions, for relative scaling
    position: str

    def as_vector(self, direction: torch.Tensor, meta: dict, lm_shape: ModelShape) -> SteeringVector:
        """A (layers, hidden) direction over these layers as a SteeringVector carrying the extraction
        settings (position, pair count, residual norms for relative scaling); `meta` adds or overrides."""
        model_id, hidden, depth = lm_shape
        info = {"position": self.position, "n_pairs": len(self.pairs),
                "residual_norms": {str(l): n for l, n in self.residual_norms.items()}, **meta}
        return SteeringVector(directions={l: direction[i].clone() for i, l in enumerate(self.layers)},
                              model_id=model_id, hidden_size=hidden, num_layers=depth, meta=info)


def _texts(lm: LanguageModel, pair: PreferencePair) -> tuple[str, str, str]:
    prompt = render_chat(lm.tokenizer, [{"role": "user", "content": pair.prompt}])
    return prompt, prompt + pair.chosen, prompt + pair.rejected


@torch.inference_mode()
def response_activations(lm: LanguageModel, prompts: Sequence[str], full_texts: Sequence[str],
                         layers: Sequence[int], position: str = "last") -> torch.Tensor:
    """(rows, layers, hidden) residual activations of each text's response part."""
    if position not in POSITIONS:
        raise InputError(f"position must be one of {POSITIONS}, got {position!r}")
    ids, mask = encode(lm, full_texts)
    captured = internals.residuals_at(lm.model, ids, mask, layers)
    stacked = torch.stack([captured[l] for l in layers], dim=1).float()  # (rows, layers, seq, hidden)
    if position == "last":
        return stacked[:, :, -1, :]
    prompt_lengths = [len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    lengths = mask.sum(-1)
    seq = ids.shape[1]
    start = seq - lengths + torch.tensor(prompt_lengths, device=mask.device)  # first response token
    index = torch.arange(seq, device=mask.device)
    keep = (index[None, :] >= start[:, None]).to(stacked.dtype)  # (rows, seq)
    counts = keep.sum(-1).clamp(min=1)
    return (stacked * keep[:, None, :, None]).sum(2) / counts[:, None, None]


def extract_pair_activations(
    lm: LanguageModel,
    pairs: Sequence[PreferencePair],
    layers: Sequence[int],
    *,
    position: str = "last",
    batch_size: int = 8,
    progress: bool = True,
) -> PairActivations:
    layers = internals.check_layers(layers, internals.num_layers(lm.model))
    if not pairs:
        raise InputError("no preference pairs to extract from")
    diffs, norm_sum = [], torch.zeros(len(layers))
    bar = tqdm(total=len(pairs), desc="extracting activations", unit="pair", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        texts = [_texts(lm, p) for p in chunk]
        prompts = [t[0] for t in texts] * 2
        full = [t[1] for t in texts] + [t[2] for t in texts]
        acts = response_activations(lm, prompts, full, layers, position).cpu()
        chosen, rejected = acts[: len(chunk)], acts[len(chunk):]
        diffs.append(chosen - rejected)
        norm_sum += acts.norm(dim=-1).sum(0)
        bar.update(len(chunk))
    bar.close()
    norms = norm_sum / (2 * len(pairs))
    return PairActivations(diffs=torch.cat(diffs), layers=list(layers), pairs=list(pairs),
                           residual_norms={l: float(n) for l, n in zip(layers, norms)}, position=position)


ACTIVATIONS_FORMAT = "steer-away/pair-activations@1"


def save_pair_activations(acts: PairActivations, path: str | Path, lm_shape: ModelShape) -> Path:
    """Per-pair differences as safetensors, pairs and settings as JSON in the header (no pickle)."""


    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_id, hidden, depth = lm_shape
    header = {"format": ACTIVATIONS_FORMAT, "model_id": model_id, "hidden_size": hidden, "num_layers": depth,
              "layers": acts.layers, "position": acts.position,
              "residual_norms": {str(k): v for k, v in acts.residual_norms.items()},
              "pairs": [asdict(p) for p in acts.pairs]}
    save_file({"diffs": acts.diffs.contiguous()}, str(path), metadata={"steer_away": json.dumps(header)})
    return path


def load_pair_activations(path: str | Path) -> tuple[PairActivations, ModelShape]:
    """The activations and the (model id, hidden size, depth) of the model they came from."""


    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair activations file not found: {path}")
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads((handle.metadata() or {}).get("steer_away", "{}"))
    if header.get("format") != ACTIVATIONS_FORMAT:
        raise InputError(f"{path} is not a steer-away pair-activations file")
    diffs = load_file(str(path))["diffs"]
    if not torch.isfinite(diffs).all():
        raise InputError(f"{path}: diffs contain NaN or Inf")
    pairs = [PreferencePair(**p) for p in header["pairs"]]
    if len(pairs) != diffs.shape[0]:
        raise InputError(f"{path}: {len(pairs)} pairs listed but {diffs.shape[0]} rows of differences")
    return PairActivations(diffs=diffs, layers=list(header["layers"]), pairs=pairs,
                           residual_norms={int(k): v for k, v in header["residual_norms"].items()},
                           position=header["position"]), \
        ModelShape(header["model_id"], int(header["hidden_size"]), int(header["num_layers"]))
