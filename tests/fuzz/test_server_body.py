"""The HTTP body and the steering object, fuzzed: any bytes, any JSON, any value in any field of a chat
request. Each is a valid call or an APIError of status 4xx whose message is one line; never a 500, never
another exception (the server would answer it as a 500 and log a traceback)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from steer_away.server.body import parse_chat_request
from steer_away.server.errors import APIError
from steer_away.server.settings import ServerSettings
from steer_away.server.validate import ServingView, validate_chat
from steer_away.steering.registry import build_method, method_names
from tests.fuzz.strategies import structures, texts, values

FIELDS = ["model", "messages", "user", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n",
          "stop", "stream", "stream_options", "steering", "tools", "logprobs", "presence_penalty", "response_format"]
STEERING = ["method", "alpha", "category", "gate", "layers"]


def view() -> ServingView:
    available = {name: (None if name == "unsteered" else "not served in this test") for name in method_names()}
    return ServingView(ServerSettings(), available, "unsteered", {"unsteered": build_method("unsteered", None, None)},
                       lambda messages: sum(len(m["content"]) for m in messages) // 4, context=2048)


def answered(body: bytes) -> None:
    try:
        validate_chat(parse_chat_request(body), view())
    except APIError as err:
        assert 400 <= err.status < 500, (err.status, err.message)
        assert "\n" not in err.message


@given(st.binary(max_size=200))
def test_random_bytes(body):
    answered(body)


@given(values)
def test_any_json_value(value):
    answered(json.dumps(value).encode("utf-8", "surrogatepass"))


messages = st.lists(st.one_of(structures(["role", "content", "name"]),
                              st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                                                     "content": st.one_of(texts, values)})), max_size=3)


@given(structures(FIELDS), messages, st.one_of(structures(STEERING), values))
def test_a_chat_request_with_any_field_values(request, conversation, steering):
    body = {**request, "messages": request.get("messages", conversation), "steering": request.get("steering", steering)}
    answered(json.dumps(body).encode("utf-8", "surrogatepass"))


@given(st.sampled_from([*method_names(), "", " ", "UNSTEERED"]),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)),
       st.one_of(st.none(), texts, values))
def test_any_steering_object(method, alpha, category):
    body = {"messages": [{"role": "user", "content": "hi"}],
            "steering": {"method": method, "alpha": alpha, "category": category}}
    answered(json.dumps(body).encode("utf-8", "surrogatepass"))
