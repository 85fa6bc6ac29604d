"""The request models convert themselves; validation names the field it refuses; only our InputError family
(and the server's own APIError) becomes a 4xx, anything else a 500."""

import math

import pytest

from steer_away.errors import InputError
from steer_away.server.errors import APIError, as_api_error
from steer_away.server.protocol import ChatRequest
from steer_away.server.settings import ServerSettings
from steer_away.server.validate import ServingView, validate_chat
from steer_away.steering.framework.method import Unsteered


def request(**fields):
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def view(**settings):
    # caa-population's entry gives the strength rule; the method object itself is not run here
    return ServingView(ServerSettings(**settings), {"unsteered": None, "caa-population": None,
                                                    "eads": "it needs profiles"}, "unsteered",
                       {"unsteered": Unsteered(), "caa-population": Unsteered()}, lambda messages: 3 * len(messages),
                       context=2048)


def test_a_request_converts_itself_into_the_librarys_generation_settings():
    config = request(temperature=0.7, top_p=0.9, seed=5, stop=["\n\n", ""], max_completion_tokens=20,
                     max_tokens=99).to_generation_config(20)
    assert (config.do_sample, config.temperature, config.top_p, config.seed, config.stop, config.max_new_tokens) == \
        (True, 0.7, 0.9, 5, ("\n\n",), 20)
    greedy = request(temperature=1e-6).to_generation_config(8)  # under GREEDY_BELOW: greedy, as vLLM does
    assert not greedy.do_sample and greedy.temperature == 1.0
    assert request(max_completion_tokens=20, max_tokens=99).requested_max_tokens(7) == 20
    assert request().requested_max_tokens(7) == 7


def test_validation_builds_a_call_with_the_row_and_counted_prompt():
    call = validate_chat(request(user="ann", steering={"method": "caa-population", "alpha": 2.5}, stream=True,
                                 stream_options={"include_usage": True}), view())
    assert (call.method, call.row.user_id, call.row.alpha, call.prompt_tokens, call.streamed, call.include_usage) == \
        ("caa-population", "ann", 2.5, 3, True, True)
    assert call.config.max_new_tokens == 128 and not call.config.do_sample


@pytest.mark.parametrize(("fields", "status", "param"), [
    ({"model": "gpt-4"}, 404, "model"),
    ({"n": 2}, 400, "n"),
    ({"max_tokens": 10**13}, 400, "max_tokens"),
    ({"steering": {"method": "eads"}}, 400, "steering.method"),
    ({"steering": {"method": "nope"}}, 400, "steering.method"),
    ({"temperature": math.inf}, 400, "temperature"),
    ({"seed": 2**63}, 400, "seed"),
    ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
])
def test_each_refusal_names_its_field(fields, status, param):
    with pytest.raises(APIError) as caught:
        validate_chat(request(**fields), view())
    assert (caught.value.status, caught.value.param) == (status, param)


def test_a_prompt_over_the_context_is_refused_with_the_limits_named():
    with pytest.raises(APIError, match="the limit is 1"):
        validate_chat(request(), view(max_prompt_tokens=1))


def test_only_our_input_errors_become_a_400():
    assert as_api_error(InputError("no such category 'x'"), "u").status == 400
    assert as_api_error(ValueError("a bug's message"), "u").status == 500  # a plain ValueError is ours, not theirs
    assert as_api_error(KeyError("k"), "u").status == 500
    own = APIError(429, "busy")
    assert as_api_error(own, "u") is own
