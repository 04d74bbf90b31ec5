"""What the hostile-input tests share: genuine deliveries as raw bytes, and the checks after a refusal."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import Service
from tests.postgres import query
from tests.rawhttp import AUTO, request_bytes

SIGNING_KEY = "hostile-tests-signing-key"  # JOBHOOK_SECRET of these services, so tests can sign as jobhook


def port(svc: Service) -> int:
    found = urlsplit(svc.url).port
    assert found is not None
    return found


def callback_path(job: dict[str, Any]) -> str:
    """`/callbacks/<token>` of a job created with `"submit": false` (its answer names the URL)."""
    return "/callbacks/" + str(job["callback_url"]).rsplit("/callbacks/", 1)[1]


def delivery_headers(task_id: str, status: str = "completed", *, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Task-Id": task_id,
        "X-Event": f"task.{status}",
        "X-Timestamp": str(int(time.time()) if timestamp is None else timestamp),
    }


def delivery_body(task_id: str, status: str = "completed", **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": task_id, "status": status, "model": "ideogram-v4", "created_at": int(time.time())}
    if status == "completed":
        body["output"] = {"urls": [f"https://files.example/{task_id}.png"]}
    elif status == "failed":
        body["error"] = {"code": "upstream_error", "message": "Image generation failed"}
    body.update(extra)
    return json.dumps(body).encode()


def raw_delivery(
    path: str,
    task_id: str,
    status: str = "completed",
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    content_length: int | None = AUTO,
) -> bytes:
    """A whole genuine aivideoapi delivery as bytes; `body`/`headers` replace the genuine ones."""
    return request_bytes(
        "POST",
        path,
        delivery_headers(task_id, status) if headers is None else headers,
        delivery_body(task_id, status) if body is None else body,
        content_length=content_length,
    )


async def assert_nothing_applied(svc: Service, job_id: str, *, status: str = "queued") -> list[dict[str, Any]]:
    """The job is still in `status`, bound to no task by a refused delivery, and its history holds no
    accepted callback. Returns its events."""
    job = await svc.job(job_id)
    assert job["status"] == status, job
    assert job["result"] is None or not job["result"].get("images"), job
    events = await svc.events(job_id)
    assert [e for e in events if e["type"] == "callback" and e["outcome"] in ("accepted", "duplicate")] == []
    assert [e for e in events if e["type"] == "status" and e["outcome"] != "submitted"] == []
    return events


async def assert_healthy(svc: Service) -> None:
    ready = await svc.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert (await svc.client.get("/healthz")).json() == {"status": "ok"}


def receipts(svc: Service, job_id: str) -> dict[str, int]:
    """event key → how many deliveries of it were recorded (read from the database itself)."""
    rows = query(svc.settings, "SELECT event_key, count FROM callback_receipts WHERE job_id = ?", (job_id,))
    return {str(key): int(count) for key, count in rows}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            inner = series[len(name) :].strip("{}")
            if ",".join(sorted(inner.split(","))) == wanted or (not labels and not inner):
                return float(value)
    return 0.0
