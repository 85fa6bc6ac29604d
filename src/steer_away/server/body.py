"""From the bytes of a request body to a validated request (`ChatRequest`, `FeedbackRequest`), or a 400
that names what is wrong.

Read with a size limit (never whole first), decoded as UTF-8 only (json.loads would guess UTF-16 and
drop a byte order mark), integers refused past 30 digits before Python's own conversion limit could
raise, and strings refused when they hold a lone surrogate, which JSON lets through and no
tokenizer, log line or response can encode.
"""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from steer_away.files import lone_surrogate_field
from steer_away.server.errors import APIError
from steer_away.server.protocol import ChatRequest

log = logging.getLogger("steer_away.server")

_TYPE_NAMES = {"str", "int", "float", "bool", "list[str]", "function-after[_join_text_parts(), str]", "AnswerText"}
MAX_INT_DIGITS = 30  # far past any count, seed or limit; Python refuses to convert over 4300 digits at all


class _HugeNumber(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(f"{digits} digits")
        self.digits = digits


def _bounded_int(text: str) -> int:
    """JSON integers as Python ints, refusing absurd lengths before Python's own conversion limit raises."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _HugeNumber(digits)
    return int(text)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing to log but a line
        log.info("client left before sending the whole request body (%d bytes read)", size)
        raise APIError(499, "client disconnected before sending the whole body") from None
    return b"".join(chunks)


def parse_chat_request(body: bytes) -> ChatRequest:
    return parse_request(body, ChatRequest)


Model = TypeVar("Model", bound=BaseModel)


def parse_request(body: bytes, model: type[Model]) -> Model:
    """Any of our request bodies (chat, feedback) into its pydantic model, or one 400 naming the field."""
    try:
        if body.startswith(b"\xef\xbb\xbf"):
            raise APIError(400, "request body starts with a byte order mark; send UTF-8 without one")
        parsed = json.loads(body.decode("utf-8"), parse_int=_bounded_int)
        where = lone_surrogate_field(parsed)
        if where is not None:
            raise APIError(400, f"field '{where}' holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text",
                           param=where)
        if not isinstance(parsed, dict):
            kind = "null" if parsed is None else type(parsed).__name__
            raise APIError(400, f"request body must be a JSON object, got {kind}")
        return model.model_validate(parsed)
    except _HugeNumber as err:
        raise APIError(400, f"request body holds an integer of {err.digits} digits; none of our fields takes "
                            f"more than {MAX_INT_DIGITS}") from err
    except json.JSONDecodeError as err:
        raise APIError(400, f"request body is not valid JSON: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise APIError(400, f"request body is not UTF-8 text: {err.reason} at byte {err.start}") from err
    except RecursionError as err:
        raise APIError(400, "request body is nested too deeply") from err
    except ValidationError as err:
        # A union's member type is no field of the client's (`stop.str`): drop it, and of the members'
        # errors report the one that says most (`stop: [null]` -> `stop.0`).
        found = [(tuple(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _TYPE_NAMES)), e)
                 for e in err.errors()]
        loc, first = max(found, key=lambda item: len(item[0]))
        param = ".".join(loc)
        if first["type"] == "extra_forbidden":
            raise APIError(400, f"unknown field '{param}'", param=param) from err
        raise APIError(400, f"invalid field '{param}': {first['msg']}", param=param) from err
