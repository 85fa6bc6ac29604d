"""The HTTP server: OpenAI-compatible chat completions with per-user steering.

By endpoint, as serving engines lay it out: `protocol.py` the wire format (pydantic models that
convert themselves), `body.py` bytes to a request, `validate.py` a request to a `ChatCall`, `jobs.py`
a call with its transport and the worker's state, `engine.py` the batching worker that owns the
model, `routes/` one module per endpoint group, `errors.py` the one mapping from an exception to an
HTTP error, `app.py` the application and the uvicorn entry points.
"""

from steer_away.server.app import create_app, serve, serve_in_thread
from steer_away.server.errors import APIError
from steer_away.server.settings import ServerSettings

__all__ = ["APIError", "ServerSettings", "create_app", "serve", "serve_in_thread"]
