"""The ceiling: a bare Starlette app that answers the bench's requests without doing any work.

Served exactly as `jobhook serve` serves jobhook (one uvicorn process, same options), so that the
difference between the two is jobhook's own work. It reads every request body, like jobhook does.

    python bench/bare.py --port 8001 [--job-json FILE] [--list-json FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACCEPTED = b'{"status":"accepted"}'


def build(job_json: bytes, list_json: bytes) -> Starlette:
    async def callback(request: Request) -> Response:
        await request.body()
        return Response(ACCEPTED, media_type="application/json")

    async def job(request: Request) -> Response:
        return Response(job_json, media_type="application/json")

    async def jobs(request: Request) -> Response:
        if request.method == "POST":
            await request.body()
            return Response(job_json, status_code=202, media_type="application/json")
        return Response(list_json, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/callbacks/{token}", callback, methods=["POST"]),
            Route("/v1/jobs", jobs, methods=["GET", "POST"]),
            Route("/v1/jobs/{job_id}", job, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--job-json", type=Path, help="the static body of GET /v1/jobs/{id} and POST /v1/jobs")
    parser.add_argument("--list-json", type=Path, help="the static body of GET /v1/jobs")
    args = parser.parse_args()
    job_json = args.job_json.read_bytes() if args.job_json else b'{"id":"job_0","status":"submitted"}'
    list_json = args.list_json.read_bytes() if args.list_json else b'{"jobs":[],"next_cursor":null}'
    # The options of `jobhook serve` (service/cli.py): no access log, proxy headers from loopback.
    uvicorn.run(
        build(job_json, list_json),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
