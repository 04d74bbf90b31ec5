"""`POST /callbacks/{token}`: the providers' callbacks (public, no bearer token), SPEC §4."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from service.api import runtime
from service.domain.callbacks import MAX_BODY_BYTES
from service.errors import StorageError
from service.http import BodyTooLarge, JSONResponse, read_body


async def take_callback(request: Request) -> JSONResponse:
    rt = runtime(request)
    token = request.path_params["token"]
    # The token is checked before the body is read: a forged URL learns nothing, not even the limit.
    claim = rt.engine.tokens.verify(token)
    provider = claim.provider if claim is not None else "unknown"
    try:
        if claim is None:
            answer = await rt.engine.refuse_token()
            return JSONResponse(answer.body, status_code=answer.status)
        raw: bytes | None
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            raw = None  # refused below, on the job's own history
        answer = await rt.engine.take_callback(claim, combined_headers(request), raw)
    except StorageError:
        # Answered 503 by the app (the provider retries); counted here, since every delivery is
        # (SPEC §4) and a storage fault turning deliveries away is what an operator must see.
        rt.metrics.callbacks.labels(provider, "unavailable", "storage_unavailable").inc()
        raise
    return JSONResponse(answer.body, status_code=answer.status)


def combined_headers(request: Request) -> dict[str, str]:
    """Lower-case names; a field sent several times is one comma-joined value (RFC 9110 §5.3).

    A dict built from the raw list would keep only the last `X-Task-Id` or `X-Timestamp` and ignore
    the others; joined, two copies are simply not a valid value, and the checks refuse them.
    """
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


routes = [Route("/callbacks/{token}", take_callback, methods=["POST"])]
