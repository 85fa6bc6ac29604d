"""One module per endpoint group, each an `APIRouter` that reads the server's state from the request."""
