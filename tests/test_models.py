from pathlib import Path

import pytest
import torch

from steer_away.generation import GenerationConfig, generate
from steer_away.models import ModelLoadError, embedded_gguf_path, load_model
from tests.conftest import make_tiny_lm


def test_local_folder_round_trip(tmp_path, tokenizer):
    lm = make_tiny_lm("llama", tokenizer)
    lm.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.source == "folder"
    for name, tensor in lm.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
    prompt = ["the quick brown fox"]
    cfg = GenerationConfig(max_new_tokens=6)
    assert generate(loaded, prompt, config=cfg)[0].token_ids == generate(lm, prompt, config=cfg)[0].token_ids


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "model.gguf"))


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_damaged_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="could not read GGUF file .*broken.gguf"):
        load_model(str(bad), use_cache=False)


def test_unknown_hub_id_offline_names_the_id(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


def test_embedded_gguf_ships_in_the_wheel():
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
def test_gguf_file_and_cached_copy_agree(tmp_path, monkeypatch):
    """The GGUF path is really exercised: de-quantise, cache as safetensors, reload, same logits."""
    monkeypatch.setenv("STEER_AWAY_CACHE", str(tmp_path))
    first = load_model(str(embedded_gguf_path()), device="cpu")
    assert list(Path(tmp_path).glob("models/*/model.safetensors"))
    second = load_model(str(embedded_gguf_path()), device="cpu")
    assert first.model.config.num_hidden_layers == 30 and first.model.config.hidden_size == 576
    ids = first.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(first.model(ids).logits, second.model(ids).logits)


@pytest.mark.slow
def test_embedded_model_answers_coherently(embedded_lm):
    out = generate(embedded_lm, ["What is the capital of France?"], config=GenerationConfig(max_new_tokens=20))
    assert "Paris" in out[0].text
    assert out[0].finish_reason == "stop"


def test_unreachable_hub_fails_at_once(monkeypatch):
    import time

    import httpx
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise httpx.ConnectError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face hub to fetch 'nope/model'"):
        load_model("nope/model")
    assert time.perf_counter() - start < 5


def test_missing_hub_repo_is_named(monkeypatch):
    import httpx
    import huggingface_hub

    def missing(repo_id, **kwargs):
        response = httpx.Response(404, request=httpx.Request("GET", f"https://hub.invalid/{repo_id}"))
        raise huggingface_hub.errors.RepositoryNotFoundError(f"{repo_id} not found", response=response)

    monkeypatch.setattr(huggingface_hub, "model_info", missing)
    with pytest.raises(ModelLoadError, match="no model 'nope/model' on the Hugging Face hub"):
        load_model("nope/model")
