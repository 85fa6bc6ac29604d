"""What the server tests share: a synthetic tiny-model setup (random weights, random vectors), and
requests made to it over real HTTP."""

import socket

import httpx
import torch

from steer_away.generation import GenerationConfig, generate
from steer_away.profiles.build import UserProfile
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.vector import SteeringVector

TOKEN = "test-token"
PROMPT = [{"role": "user", "content": "the quick brown fox"}]


def vector(seed):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * 3 for l in (1, 2)}, "tiny-random-llama", 32, 4)


def profile(user, sensitivity):
    return UserProfile(user, ["TOXICITY"], [0.1], [0.2], 0.1, None, sensitivity, [0.0], 1, 1)


def post(served, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(served["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def expected(served, user, alpha=None, tokens=8):
    method = ActivationSteering({"ann": vector(1), "bob": vector(2)}, alpha=0.5, default=vector(0))
    return generate(served["lm"], [PROMPT], method=method, rows=[RowSteering(user, alpha)],
                    config=GenerationConfig(max_new_tokens=tokens))[0].text


def raw_post(url, content, headers=None):
    return httpx.post(url + "/v1/chat/completions", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(headers or {})})


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts in another process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
