"""The HTTP errors the server answers, and the one mapping from an exception to one.

Only our `InputError` family (the client's input cannot be used) and `APIError` (raised by the
server itself with its status) reach the client as what they say; anything else is our bug: a 500,
logged with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import Response

from steer_away.errors import InputError, one_line

log = logging.getLogger("steer_away.server")


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        message = one_line(message)  # a client's key with a newline in it must not split the message
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


def as_api_error(err: BaseException, user_id: str | None, param: str | None = "steering") -> APIError:
    """What a client is told when its request failed: its own input (400) or our fault (500)."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, InputError):
        return APIError(400, str(err), param=param)
    log.error("request for user %r failed", user_id, exc_info=err)  # repr: an id cannot forge log lines
    return APIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error")


def error_response(err: APIError) -> Response:
    """An error as JSON with non-ASCII escaped: a message quoting the client's text can always be sent."""
    return Response(json.dumps(err.body()), status_code=err.status, media_type="application/json")
