"""The CUDA path: greedy answers identical alone, batched and joining mid-flight for every method;
steering edits in the model's own half-precision dtype with finite results; the CPU decode step never
used on a GPU. Skipped without CUDA; `bench/device_check.sh` runs them on a GPU machine."""

import pytest
import torch

from steer_away import internals
from steer_away.decoding import DecodeLoop, DecodeRequest
from steer_away.decoding.runner import stacked_edits
from steer_away.generation import generate
from steer_away.steering.framework.method import RowSteering, Unsteered
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import ACD, EADS
from tests.conftest import make_tiny_lm
from tests.decoding.test_loop import CATS, LONG, PROFILES, PROMPTS, vector

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_lm(tokenizer, dtype=torch.float32):
    lm = make_tiny_lm("llama", tokenizer)
    lm.model.to(device="cuda", dtype=dtype)
    return lm


def methods():
    caa = ActivationSteering({"ann": vector(1), "bob": vector(2, layers=(2, 3))}, alpha=1.5, default=vector(0))
    return [(None, RowSteering()), (caa, RowSteering("ann")), (caa, RowSteering("bob")),
            (ActivationSteering(vector(3), alpha=2.0, gate=3), RowSteering()),
            (EADS(CATS, PROFILES), RowSteering("s")), (ACD(CATS, PROFILES, alpha=3.0), RowSteering("s"))]


def test_every_method_answers_alike_alone_batched_and_joining_mid_flight(tokenizer):
    lm = cuda_lm(tokenizer)
    plan = [(PROMPTS[i % len(PROMPTS)], method, row) for i, (method, row) in enumerate(methods())]
    alone = [generate(lm, [p], m, [r], LONG)[0].token_ids for p, m, r in plan]
    for method, row in methods():  # one method, all prompts in one batch
        batched = generate(lm, PROMPTS, method, [row] * len(PROMPTS), LONG)
        assert [g.token_ids for g in batched] == [generate(lm, [p], method, [row], LONG)[0].token_ids
                                                  for p in PROMPTS], getattr(method, "name", "unsteered")
    loop = DecodeLoop(lm)
    requests = []
    for step in range(len(plan) * 2):
        if step % 2 == 0:  # a new request joins every other step
            prompt, method, row = plan[step // 2]
            requests.append(loop.add(DecodeRequest(prompt, method or Unsteered(), row, LONG)))
        loop.step()
    loop.run()
    assert [r.tokens for r in requests] == alone


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_steering_edits_stay_in_the_models_half_precision_and_finite(tokenizer, dtype):
    lm = cuda_lm(tokenizer, dtype)
    caa = ActivationSteering({"ann": vector(1)}, alpha=4.0, default=vector(0))
    request = DecodeRequest(PROMPTS[0], caa, RowSteering("ann"), LONG)
    loop = DecodeLoop(lm)
    loop.add(request)
    edits = caa.prepare(lm, [[{"role": "user", "content": PROMPTS[0]}]], [RowSteering("ann")]).edits
    assert edits is not None and all(d.dtype == dtype and d.device.type == "cuda" for d in edits.deltas.values())
    stacked = stacked_edits([request], 1, lm)
    hidden = torch.zeros((1, 1, 32), device="cuda", dtype=dtype)
    for edit in stacked.values():
        edit(hidden)
    assert hidden.dtype == dtype  # edited in place, in the model's dtype: no silent upcast
    loop.run()
    assert len(request.tokens) == LONG.max_new_tokens
    scores = internals.forward_full(lm.model, torch.tensor([[5, 6, 7]], device="cuda"),
                                    torch.ones((1, 3), dtype=torch.long, device="cuda"))
    assert torch.isfinite(scores).all()


def test_the_cpu_decode_step_is_never_used_on_cuda(tokenizer):
    lm = cuda_lm(tokenizer)
    assert internals.fast_decoder(lm.model) is None
