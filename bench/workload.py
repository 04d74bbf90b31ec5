"""The request files the load generators replay (see loadgen.py for the line format)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from loadgen import request_line, write_requests

from service.domain.callbacks import CallbackTokens

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"  # JOBHOOK_SECRET of every bench service
API_TOKEN = "bench-api-token-0123456789abcdefghijklmnopqrstuvwxyz"  # JOBHOOK_API_TOKENS
API_KEY = "sk-bench-0123456789"  # JOBHOOK_AIVIDEOAPI_API_KEY (the fake provider takes any sk-… key)
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def task_object(task_id: str, now: int) -> dict[str, object]:
    """aivideoapi's task object, completed (PROVIDERS.md §1): a callback's body and a poll's answer."""
    return {
        "id": task_id,
        "status": "completed",
        "model": "ideogram-v4",
        "created_at": now - 20,
        "completed_at": now,
        "output": {
            "urls": [f"https://files.aivideoapi.invalid/{task_id}.png"],
            "metadata": {"model": "ideogram-ai/ideogram-v4"},
        },
    }


def callbacks(
    path: Path, job_ids: list[str], task_ids: list[str], total: int, *, seed: int = 1, min_gap: int = 128
) -> dict[str, int]:
    """`total` genuine aivideoapi callbacks (`task.completed`) for the given jobs: two thirds first
    deliveries of distinct jobs, in random order, and every third request a repeat of a delivery made
    at least `min_gap` requests before it (as the provider's retries come: after the first, usually
    answered already). The URL is the job's own, signed with JOBHOOK_SECRET as jobhook signs it;
    X-Timestamp is now, so the file must be replayed within JOBHOOK_TIMESTAMP_TOLERANCE (300 s)."""
    rng = random.Random(seed)
    firsts_needed = total - total // 3
    if firsts_needed > len(job_ids):
        raise ValueError(f"{total} callbacks need {firsts_needed} jobs, {len(job_ids)} seeded")
    order = rng.sample(range(len(job_ids)), firsts_needed)
    signer = CallbackTokens([SECRET])
    now = int(time.time())
    rendered: dict[int, str] = {}

    def line(index: int) -> str:
        if index not in rendered:
            job_id, task_id = job_ids[index], task_ids[index]
            body = json.dumps(task_object(task_id, now), separators=(",", ":"))
            headers = {
                "Content-Type": "application/json",
                "X-Event": "task.completed",
                "X-Task-Id": task_id,
                "X-Timestamp": str(now),
            }
            rendered[index] = request_line("POST", f"/callbacks/{signer.sign(job_id, 'aivideoapi')}", body, headers)
        return rendered[index]

    lines, delivered, repeats = [], 0, 0
    for position in range(total):
        if position % 3 == 2:
            hi = max(1, delivered - min_gap)
            lo = max(0, hi - 4096)
            lines.append(line(order[rng.randrange(lo, hi)]))
            repeats += 1
        else:
            lines.append(line(order[delivered]))
            delivered += 1
    write_requests(path, lines)
    return {"lines": total, "first_deliveries": delivered, "repeats": repeats, "x_timestamp": now}


def gets(path: Path, job_ids: list[str], count: int, *, seed: int = 2) -> int:
    """`GET /v1/jobs/{id}` of `count` ids drawn at random from the existing ones."""
    rng = random.Random(seed)
    lines = [request_line("GET", f"/v1/jobs/{rng.choice(job_ids)}", "", AUTH) for _ in range(count)]
    write_requests(path, lines)
    return count


LIST_PATH = "/v1/jobs?status=completed&provider=aivideoapi&limit=50"


def lists(path: Path) -> int:
    write_requests(path, [request_line("GET", LIST_PATH, "", AUTH)])
    return 1


def submits(path: Path, count: int, *, tag: str) -> int:
    """`POST /v1/jobs` to aivideoapi, each with its own Idempotency-Key (as a backend sends them)."""
    lines = []
    for i in range(count):
        body = json.dumps(
            {"provider": "aivideoapi", "prompt": f'A poster reading "BENCH {i}"', "aspect_ratio": "16:9"},
            separators=(",", ":"),
        )
        headers = {**AUTH, "Content-Type": "application/json", "Idempotency-Key": f"bench-{tag}-{i}"}
        lines.append(request_line("POST", "/v1/jobs", body, headers))
    write_requests(path, lines)
    return count


def polls(path: Path, task_ids: list[str]) -> int:
    """The provider's `GET /v1/tasks/{id}`, as jobhook polls it (the poller's baseline)."""
    write_requests(
        path, [request_line("GET", f"/v1/tasks/{t}", "", {"Authorization": f"Bearer {API_KEY}"}) for t in task_ids]
    )
    return len(task_ids)
