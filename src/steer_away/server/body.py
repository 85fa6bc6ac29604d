"""From the bytes of a request body to a validated `ChatRequest`, or a 400 that names what is wrong.

Read with a size limit (never whole first), decoded as UTF-8 only (json.loads would guess UTF-16 and
drop a byte order mark), integers refused past 30 digits before Python's own conversion limit could
raise, and strings refused when they hold a lone surrogate, which JSON lets through and no
tokenizer, log line or response can encode.
"""

from __future__ import annotations

import json

from fastapi import Request
from pydantic import ValidationError

from steer_away.server.errors import APIError
from steer_away.server.protocol import ChatRequest

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


def _lone_surrogate(value: object, path: str = "") -> str | None:
    """Where in a parsed JSON body a string holds an unpaired surrogate (JSON lets "\\ud800" through;
    no tokenizer, log or response can encode it): the field's dotted path, or None."""
    if isinstance(value, str):
        return path or "(body)" if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _lone_surrogate(key) is not None:
            return f"{path}.(key)" if path else "(key)"
        found = _lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        if body.startswith(b"\xef\xbb\xbf"):
            raise APIError(400, "request body starts with a byte order mark; send UTF-8 without one")
        parsed = json.loads(body.decode("utf-8"), parse_int=_bounded_int)
        where = _lone_surrogate(parsed)
        if where is not None:
            raise APIError(400, f"field '{where}' holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text",
                           param=where)
        return ChatRequest.model_validate(parsed)
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
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise APIError(400, f"unknown field '{param}'", param=param) from err
        raise APIError(400, f"invalid field '{param}': {first['msg']}", param=param) from err
