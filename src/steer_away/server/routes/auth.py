"""The API key: a bearer token compared in constant time, required by every route but /health.

Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request."""

from __future__ import annotations

import secrets

from fastapi import Request

from steer_away.server.errors import APIError
from steer_away.server.state import server_state


async def require_key(request: Request) -> None:
    key = server_state(request).settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    if not secrets.compare_digest(token.encode(), key.encode()):
        raise APIError(401, "missing or wrong bearer token", "authentication_error")


async def require_program(request: Request) -> None:
    """A POST from a program, not from a web page: browsers send `Origin` with every cross-site POST (a page
    could otherwise drive a keyless loopback server, reloads included), and a JSON body must say it is one
    (a page's form posts `text/plain` or a form encoding without asking first)."""
    origin = request.headers.get("origin")
    if origin is not None:
        raise APIError(403, f"requests from a web page (Origin: {origin[:100]}) are refused; this API is for "
                            "programs (put a proxy with its own CORS policy in front to serve a browser)",
                       "permission_error")
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if request.method == "POST" and request.url.path.startswith("/v1/") and kind != "application/json":
        raise APIError(415, f"send the body as JSON with Content-Type: application/json (got {kind or 'none'})")


async def require_admin(request: Request) -> None:
    settings = server_state(request).settings
    if settings.api_key is None and not settings.admin_without_key:
        raise APIError(403, "admin endpoints need an API key (--api-key) when the server listens beyond loopback",
                       "permission_error")
    await require_key(request)
