"""`SteeringVector`: per-layer residual-stream directions, as values you can add and scale.

Files are safetensors (tensors `layer.{i}`) with our metadata as JSON in the header: nothing in a
vector file is ever executed, and loading checks it against the model it will steer. llama.cpp
control vectors (GGUF, architecture `controlvector`) can be exported and imported too.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from steer_away import internals
from steer_away.errors import InputError
from steer_away.files import write_atomically
from steer_away.steering.vectors.kinds import COMPOSED_VECTOR, IMPORTED_VECTOR

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

VECTOR_FORMAT = "steer-away/vector@1"
MAX_DIRECTION_NORM = 1e4  # residual norms of the models we know are 10-1000: a longer direction is corrupt


class VectorFileError(InputError):
    """A vector file that is unreadable, damaged or made for another model."""


class MissingVectorsError(VectorFileError):
    """The vectors asked for are not there at all (a bank never built), as against damaged ones."""


@dataclass
class SteeringVector:
    directions: dict[int, torch.Tensor]  # decoder layer index -> (hidden,) float32 on the CPU
    model_id: str
    hidden_size: int
    num_layers: int
    meta: dict[str, object] = field(default_factory=dict)  # kind, user, n_pairs, position, seed, norms…

    def __post_init__(self) -> None:
        for layer, vec in self.directions.items():
            if vec.shape != (self.hidden_size,):
                raise VectorFileError(f"layer {layer}: direction has shape {tuple(vec.shape)}, "
                                      f"expected ({self.hidden_size},)")
            if not 0 <= layer < self.num_layers:
                raise VectorFileError(f"layer {layer} is outside 0-{self.num_layers - 1}")
            length = float(vec.norm())
            if not length <= MAX_DIRECTION_NORM:  # also catches NaN
                raise VectorFileError(f"layer {layer}: direction norm {length:.3g} is not a finite number below "
                                      f"{MAX_DIRECTION_NORM:g}; the vector is damaged or wrongly scaled")

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    # --- arithmetic: composing per-user vectors should read like the maths ---

    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if (other.hidden_size, other.num_layers) != (self.hidden_size, self.num_layers):
            raise InputError("cannot combine vectors of different models")
        layers = set(self.directions) | set(other.directions)
        zero = torch.zeros(self.hidden_size)
        out = {l: self.directions.get(l, zero) + sign * other.directions.get(l, zero) for l in layers}
        return replace(self, directions=out, meta=_combined_meta(self.meta, other.meta))

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, scalar: float) -> SteeringVector:
        return replace(self, directions={l: v * float(scalar) for l, v in self.directions.items()},
                       meta=dict(self.meta))

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def norm(self) -> dict[int, float]:
        return {l: float(v.norm()) for l, v in self.directions.items()}

    def cosine(self, other: SteeringVector) -> float:
        """Cosine between the two vectors concatenated over the layers they share."""
        shared = sorted(set(self.directions) & set(other.directions))
        if not shared:
            raise InputError("the vectors share no layer")
        a = torch.cat([self.directions[l] for l in shared])
        b = torch.cat([other.directions[l] for l in shared])
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    def restricted(self, layers: list[int]) -> SteeringVector:
        missing = [l for l in layers if l not in self.directions]
        if missing:
            raise InputError(f"vector has no direction for layer(s) {missing}; it has {self.layers}")
        return replace(self, directions={l: self.directions[l] for l in layers}, meta=dict(self.meta))

    def relative(self) -> SteeringVector:
        """Each layer rescaled to the typical residual norm there, so α is a fraction of that norm.

        Raw difference-of-means vectors need model-specific α; relative ones let one α mean the same
        push on SmolLM2 and Llama-3.1-8B.
        """
        norms = self.meta.get("residual_norms")
        if not isinstance(norms, dict):
            raise InputError("vector has no residual norms recorded; re-extract it to use relative scaling")
        out = {}
        for layer, vec in self.directions.items():
            length = float(vec.norm())
            out[layer] = vec * (float(norms[str(layer)]) / length) if length > 0 else vec
        return replace(self, directions=out, meta={**self.meta, "scale": "relative"})

    # --- files ---

    def save(self, path: str | Path) -> Path:
        header = {"format": VECTOR_FORMAT, "model_id": self.model_id, "hidden_size": self.hidden_size,
                  "num_layers": self.num_layers, "meta": self.meta}
        tensors = {f"layer.{l}": v.detach().float().contiguous().cpu() for l, v in self.directions.items()}
        return write_atomically(path, "vector file", lambda tmp: save_file(
            tensors, str(tmp), metadata={"steer_away": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | Path, lm: LanguageModel | None = None, *, allow_other_model: bool = False) -> SteeringVector:
        """Read a vector file; with `lm`, check it fits that model (hidden size, depth, model id)."""

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vector file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get("steer_away")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise VectorFileError(f"{path} is not a readable safetensors file: {err}") from err
        try:
            header = json.loads(raw or "")
        except json.JSONDecodeError as err:
            raise VectorFileError(f"{path}: metadata 'steer_away' is missing or not JSON") from err
        if not isinstance(header, dict):
            raise VectorFileError(f"{path}: metadata 'steer_away' must be a JSON object")
        if header.get("format") != VECTOR_FORMAT:
            raise VectorFileError(f"{path}: format is {header.get('format')!r}, expected {VECTOR_FORMAT!r}")
        directions = {}
        for name, tensor in tensors.items():
            if not name.startswith("layer.") or not name[6:].isdigit():
                raise VectorFileError(f"{path}: unexpected tensor '{name}' (expected layer.<index>)")
            if not torch.isfinite(tensor).all():
                raise VectorFileError(f"{path}: tensor '{name}' contains NaN or Inf")
            directions[int(name[6:])] = tensor.float()
        try:
            model_id, hidden, depth = header["model_id"], header["hidden_size"], header["num_layers"]
        except KeyError as err:
            raise VectorFileError(f"{path}: metadata lacks {err}") from err
        meta = header.get("meta") or {}
        if not isinstance(model_id, str) or not isinstance(meta, dict):
            raise VectorFileError(f"{path}: metadata 'model_id' must be a string and 'meta' an object")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (hidden, depth)):
            raise VectorFileError(f"{path}: metadata 'hidden_size' and 'num_layers' must be whole numbers >= 1, "
                                  f"got {hidden!r} and {depth!r}")
        try:
            vector = cls(directions=directions, model_id=model_id, hidden_size=hidden, num_layers=depth, meta=dict(meta))
        except VectorFileError as err:
            raise VectorFileError(f"{path}: {err}") from err
        if lm is not None:
            vector.check_fits(lm, allow_other_model=allow_other_model, where=str(path))
        return vector

    def check_fits(self, lm: LanguageModel, *, allow_other_model: bool = False, where: str = "vector") -> None:
        model = lm.model
        hidden, depth = internals.hidden_size(model), internals.num_layers(model)
        if hidden != self.hidden_size:
            raise VectorFileError(f"{where}: hidden size {self.hidden_size} does not match the model's {hidden}")
        if depth != self.num_layers:
            raise VectorFileError(f"{where}: made for {self.num_layers} layers, the model has {depth}")
        model_id = lm.model_id
        if self.model_id != model_id and not allow_other_model:
            raise VectorFileError(f"{where}: extracted from '{self.model_id}', not '{model_id}' "
                                  "(--allow-other-model, or allow_other_model=True, uses it anyway)")

    # --- llama.cpp control vectors ---
    #
    # llama.cpp (src/llama-adapter.cpp, llama_adapter_cvec::apply and apply_to; the loader in
    # common/common.cpp) copies tensor `direction.N` into its per-layer slot N and adds slot N to the
    # output of the 0-based block N; `direction.0` is refused. Our layer index is also the 0-based
    # block whose output we edit, so the file name is the layer itself, and layer 0 cannot be written.

    def export_gguf(self, path: str | Path, model_hint: str = "llama") -> Path:
        """A llama.cpp control vector (architecture `controlvector`); `model_hint` is the model's
        architecture name, as llama.cpp's cvector-generator and repeng write it."""
        import gguf

        if 0 in self.directions:
            raise VectorFileError("llama.cpp control vectors cannot steer layer 0 (it ignores direction.0); "
                                  "restrict the vector to layers >= 1 first")
        def write(tmp: Path) -> None:
            writer = gguf.GGUFWriter(str(tmp), "controlvector")
            writer.add_string("controlvector.model_hint", model_hint)
            writer.add_uint32("controlvector.layer_count", len(self.directions))
            for layer in self.layers:
                writer.add_tensor(f"direction.{layer}", self.directions[layer].float().numpy())
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()

        return write_atomically(path, "GGUF control vector", write)

    @classmethod
    def import_gguf(cls, path: str | Path, num_layers: int, model_id: str | None = None) -> SteeringVector:
        import gguf

        _check_gguf_header(Path(path))
        try:
            reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError, IndexError, KeyError, OverflowError, struct.error) as err:
            raise VectorFileError(f"{path} is not a readable GGUF file: {type(err).__name__}: {err}") from None
        arch = reader.fields.get("general.architecture")
        if arch is None or bytes(arch.parts[-1]).decode() != "controlvector":
            raise VectorFileError(f"{path}: not a control vector (general.architecture != 'controlvector')")
        hint_field = reader.fields.get("controlvector.model_hint")
        hint = bytes(hint_field.parts[-1]).decode() if hint_field else "unknown"
        directions = {}
        for tensor in reader.tensors:
            if not tensor.name.startswith("direction."):
                continue
            index = tensor.name.split(".", 1)[1]
            if not index.isdigit() or not 1 <= int(index) < num_layers:
                raise VectorFileError(f"{path}: tensor '{tensor.name}' names no layer 1-{num_layers - 1} "
                                      f"of a {num_layers}-layer model")
            data = torch.tensor(tensor.data.copy(), dtype=torch.float32).reshape(-1)
            if not torch.isfinite(data).all():
                raise VectorFileError(f"{path}: tensor '{tensor.name}' contains NaN or Inf")
            directions[int(index)] = data
        if not directions:
            raise VectorFileError(f"{path}: no direction.* tensors")
        hidden = next(iter(directions.values())).numel()
        return cls(directions=directions, model_id=model_id or hint, hidden_size=hidden, num_layers=num_layers,
                   meta={"kind": IMPORTED_VECTOR, "source": str(path)})


GGUF_MAGIC = b"GGUF"
GGUF_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, key-value count
GGUF_MIN_ENTRY = 12  # bytes: the smallest tensor description or key-value pair (an empty name and a small value)


def _check_gguf_header(path: Path) -> None:
    """Refuse a file whose header cannot be a GGUF control vector's before a reader trusts its counts
    (a 24-byte file claiming 2^63 tensors sent gguf's reader past the end)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(GGUF_HEADER.size)
        size = path.stat().st_size
    except IsADirectoryError:
        raise VectorFileError(f"{path} is a folder, not a GGUF file") from None
    if len(head) < GGUF_HEADER.size or head[:4] != GGUF_MAGIC:
        raise VectorFileError(f"{path} is not a GGUF file (no GGUF header)")
    _, version, tensors, pairs = GGUF_HEADER.unpack(head)
    if version not in (2, 3):
        raise VectorFileError(f"{path}: GGUF version {version}; this reader takes versions 2 and 3")
    if (tensors + pairs) * GGUF_MIN_ENTRY > size:
        raise VectorFileError(f"{path}: its header claims {tensors} tensors and {pairs} key-value pairs, more than "
                              f"a file of {size} bytes can hold (truncated or crafted)")


def _combined_meta(a: dict[str, object], b: dict[str, object]) -> dict[str, object]:
    """Metadata of a sum or difference: what stays true of both parts is kept.

    Residual norms describe the model at a layer, not the vector, so they survive (averaged where
    both parts measured a layer); so does the read position when both parts share it.
    """
    meta: dict[str, object] = {"kind": COMPOSED_VECTOR, "parts": [a.get("kind", "vector"), b.get("kind", "vector")]}
    norms_a, norms_b = a.get("residual_norms"), b.get("residual_norms")
    if isinstance(norms_a, dict) or isinstance(norms_b, dict):
        na: dict[str, Any] = norms_a if isinstance(norms_a, dict) else {}
        nb: dict[str, Any] = norms_b if isinstance(norms_b, dict) else {}
        meta["residual_norms"] = {k: (float(na[k]) + float(nb[k])) / 2 if k in na and k in nb
                                  else float(na.get(k, nb.get(k, 0.0))) for k in set(na) | set(nb)}
    if a.get("position") is not None and a.get("position") == b.get("position"):
        meta["position"] = a["position"]
    return meta


def load_vector(path: str | Path, lm: LanguageModel | None = None, *, allow_other_model: bool = False) -> SteeringVector:
    """A safetensors vector or a llama.cpp `.gguf` control vector, checked against `lm` when given."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        if lm is None:
            raise VectorFileError(f"{path}: reading a .gguf control vector needs the model it will steer")
        if not path.is_file():
            raise FileNotFoundError(f"vector file not found: {path}")
        shape = lm.shape
        vector = SteeringVector.import_gguf(path, shape.num_layers, model_id=shape.model_id)
        vector.check_fits(lm, where=str(path))
        return vector
    return SteeringVector.load(path, lm, allow_other_model=allow_other_model)


def save_bank(folder: str | Path, population: SteeringVector | None, per_user: dict[str, SteeringVector]) -> Path:
    """A vector bank: `population.safetensors` plus `users/<user id>.safetensors`."""
    folder = Path(folder)
    if population is not None:
        population.save(folder / "population.safetensors")
    for user, vector in per_user.items():
        vector.save(folder / "users" / f"{user}.safetensors")
    return folder


def load_bank(path: str | Path, lm: LanguageModel | None = None, *, allow_other_model: bool = False
              ) -> tuple[SteeringVector | None, dict[str, SteeringVector]]:
    """(population default, per-user vectors) from a bank folder, or (vector, {}) from one file."""
    path = Path(path)
    other = {"allow_other_model": allow_other_model}
    if path.is_file():
        return SteeringVector.load(path, lm, **other), {}
    if not path.is_dir():
        raise FileNotFoundError(f"no vector file or bank folder at {path}")
    default = path / "population.safetensors"
    population = SteeringVector.load(default, lm, **other) if default.is_file() else None
    users = {f.stem: SteeringVector.load(f, lm, **other) for f in sorted((path / "users").glob("*.safetensors"))}
    if population is None and not users:
        raise MissingVectorsError(f"{path} holds no population.safetensors and no users/*.safetensors")
    return population, users
