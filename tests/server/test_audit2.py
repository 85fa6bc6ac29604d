"""The second audit's server bugs and weak spots (issue 36), each as it was reproduced."""

import logging
import socket
import time

import httpx
import pytest

from tests.server.helpers import PROMPT, TOKEN, post, raw_post


def test_bug1_alpha_for_a_method_without_a_strength_is_refused_not_echoed(served):
    reply = post(served, {"messages": PROMPT, "max_tokens": 2, "steering": {"method": "unsteered", "alpha": 900}})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "steering.alpha"
    assert "has no strength" in reply.json()["error"]["message"]
    fine = post(served, {"messages": PROMPT, "max_tokens": 2, "steering": {"method": "caa-population", "alpha": 2.0}})
    assert fine.status_code == 200 and fine.json()["steering"]["alpha"] == 2.0


def test_bug2_a_stop_of_the_replacement_character_does_not_match_half_a_character(tiny_lm):
    """Byte-level tokens of one two-byte character decode to U+FFFD until the character is whole."""
    from types import SimpleNamespace

    from steer_away.decoding.loop import DecodeLoop

    tokenizer = tiny_lm.tokenizer
    first, second = (tokenizer.convert_tokens_to_ids(t) for t in ("Ã", "©"))  # "é" is C3 A9: byte tokens Ã and ©
    assert tokenizer.decode([first]) == "\ufffd" and tokenizer.decode([first, second]) == "é"
    loop = DecodeLoop(tiny_lm)

    def says(tokens, stop):
        return loop._says_stop(SimpleNamespace(tokens=tokens, config=SimpleNamespace(stop=(stop,))))

    assert not says([first], "\ufffd")  # half an "é": not yet text
    assert not says([first, second, first], "\ufffd")  # "é" and the start of another
    assert says([first, second], "é")
    assert says([second, first, second], "\ufffd")  # a stray continuation byte is a real U+FFFD of the answer


def test_bug3_a_client_that_leaves_mid_body_leaves_no_traceback(served, caplog):
    host, port = served["url"].removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 500\r\n\r\n".encode() + b"{" * 60)
        time.sleep(0.5)
        assert httpx.get(served["url"] + "/health").status_code == 200
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("headers,status", [({"Content-Type": "text/plain"}, 415),
                                            ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
                                            ({"Origin": "https://evil.example"}, 403)])
def test_weak_spot_a_web_page_cannot_post(served, headers, status):
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    assert raw_post(served["url"], body, headers).status_code == status
    admin = httpx.post(served["url"] + "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}",
                                                                  "Origin": "https://evil.example"})
    assert admin.status_code == 403


@pytest.mark.parametrize("body,param,needle", [
    (b"[1, 2]", None, "must be a JSON object, got list"),
    (b"null", None, "must be a JSON object, got null"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": [null]}', "stop.0", "invalid field 'stop.0'"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "steering": {"method": ""}}', "steering.method", "empty"),
])
def test_weak_spot_bodies_are_refused_naming_the_field(served, body, param, needle):
    reply = raw_post(served["url"], body)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param and needle in reply.json()["error"]["message"]
