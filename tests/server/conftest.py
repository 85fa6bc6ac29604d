"""The served tiny model every server test module shares (one per module), and a slowed decode."""

import time

import pytest

from steer_away.profiles import save_profiles
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.steering.vectors.vector import save_bank
from tests.conftest import make_tiny_lm
from tests.server.helpers import TOKEN, profile, vector


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("serve")
    lm = make_tiny_lm("llama", tokenizer)
    save_bank(folder / "vectors", vector(0), {"ann": vector(1), "bob": vector(2)})
    save_profiles({"ann": profile("ann", "strict"), "bob": profile("bob", "tolerant")}, folder / "profiles.json", "t")
    settings = ServerSettings(api_key=TOKEN, max_batch=8, batch_window_s=0.2, max_tokens_limit=64,
                              max_messages=4, max_request_bytes=4000)
    app = create_app(lm, profiles=str(folder / "profiles.json"), vectors=str(folder / "vectors"), settings=settings)
    server, thread, url = serve_in_thread(app)
    yield {"url": url, "lm": lm, "app": app, "folder": folder}
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def slow_decoding(monkeypatch):
    """Every forward pass takes 50 ms more: 64 steps take seconds, long enough to hang up mid-way."""
    from steer_away import internals

    real_step = internals.forward_step

    def slow_step(*args, **kwargs):
        time.sleep(0.05)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(internals, "forward_step", slow_step)
