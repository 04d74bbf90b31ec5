"""An open-loop load generator: requests at a constant arrival rate, latency from the intended send time.

A closed loop (wrk, loadgen.py) sends the next request on a connection only once the previous answer
came: when the server stalls, the generator stops sending too, and the requests that would have
arrived meanwhile are never timed ("coordinated omission"). Here request i is due at
`start + i / rate` whatever happened before it: it goes out on an idle keep-alive connection, or on
a new one (up to `max_connections`), or waits in a queue for one; its latency is counted from when it
was due (or from when it was sent, if the generator sent it early), so a stall shows in full.

Bounded: exactly `rate × duration` requests (fewer if the request file is shorter: it is never
replayed, so that a first delivery stays a first delivery), after which the generator waits at most
`drain` seconds for the answers still due; a request unanswered by then counts with the latency it had
reached. Loopback only: the URL must be on 127.0.0.1.

    python bench/openloop.py URL FILE --rate 1000 --duration 10 [--warmup 1] [--max-connections 256]

Prints one line "OPENJSON {…}": the rate asked and reached, the latency percentiles (ms, p50 p90 p99
p99.9 max) of the requests due after the warm-up, the answers by status, how late the generator
itself sent (its own lag, which a busy machine causes and which the latencies include), and how many
connections it used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadgen import _parse_lines, _read_response

BENCH = Path(__file__).resolve().parent
EARLY = 0.0005  # s: a due request may leave this much early (timers wake late, never early enough)
TIMEOUT = 10.0  # s: an answer slower than this closes its connection (counted as a timeout)
# s: an idle kept-alive connection is not reused after this, as HTTP clients do (httpx: 5 s): jobhook
# closes one idle for 5 s (service.http.KEEP_ALIVE_TIMEOUT), and a request written into a connection the
# server has just closed is lost on the wire. Without it, connections opened during a stall sat idle
# past 5 s and the next request sent on each was counted as a failed read.
KEEPALIVE_EXPIRY = 4.0


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 p90 p99 p99.9 and max, in ms, of latencies in seconds (nearest rank)."""
    if not values:
        return dict.fromkeys(("p50", "p90", "p99", "p999", "max", "mean"))
    ordered = sorted(values)
    n = len(ordered)

    def rank(pct: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(n * pct / 100) - 1))]

    out = {key: rank(pct) for key, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / n
    return {key: round(value * 1000, 3) for key, value in out.items()}


async def _load(
    url: str, path: Path, rate: float, duration: float, warmup: float, max_connections: int, drain: float
) -> dict[str, Any]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    if host != "127.0.0.1":
        raise SystemExit("the open-loop generator only talks to 127.0.0.1")
    requests = _parse_lines(path, hostport)
    total = min(len(requests), int(rate * duration))
    interval = 1.0 / rate
    clock = time.perf_counter
    latencies: list[float] = []  # of the requests due after the warm-up
    lags: list[float] = []  # how late the generator sent each request (0 when early)
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    # idle connections and when each became idle, oldest first
    idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = collections.deque()
    queue: collections.deque[int] = collections.deque()  # due, waiting for a connection
    opened = {"count": 0, "open": 0, "max_open": 0, "queued_max": 0, "expired": 0}
    in_flight: dict[int, float] = {}  # request index → the time its latency counts from
    done = asyncio.Event()
    finished = {"count": 0}
    start = clock() + 0.05

    def due(i: int) -> float:
        return start + i * interval

    def record(i: int, status: int | None, ended: float) -> None:
        begun = in_flight.pop(i)
        if due(i) >= start + warmup:
            latencies.append(ended - begun)
            if status is not None:
                statuses[status] += 1
        finished["count"] += 1
        if finished["count"] == total:
            done.set()

    async def serve(i: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        """Send request i (and then whatever is queued) on `conn`, or on a new connection."""
        while True:
            if conn is None:
                try:
                    conn = await asyncio.open_connection(host, int(port))
                except OSError:
                    errors["connect"] += 1
                    record(i, None, clock())
                    if not queue:
                        opened["open"] -= 1
                        return
                    i = queue.popleft()
                    continue
            reader, writer = conn
            now = clock()
            lags.append(max(0.0, now - due(i)))
            in_flight[i] = min(now, due(i))
            try:
                writer.write(requests[i])
                status = await asyncio.wait_for(_read_response(reader), TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors["timeout" if isinstance(exc, TimeoutError) else "read"] += 1
                record(i, None, clock())
                writer.close()
                conn = None
                if not queue:
                    opened["open"] -= 1
                    return
                i = queue.popleft()
                opened["count"] += 1
                continue
            record(i, status, clock())
            if not queue:
                idle.append((reader, writer, clock()))
                return
            i = queue.popleft()

    tasks: set[asyncio.Future[None]] = set()  # referenced until done (the loop keeps only weak ones)

    def start_task(i: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        task = asyncio.ensure_future(serve(i, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def reusable() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently idle connection that the server has not closed, or None."""
        expired = clock() - KEEPALIVE_EXPIRY
        while idle and idle[0][2] < expired:
            idle.popleft()[1].close()
            opened["open"] -= 1
            opened["expired"] += 1
        while idle:
            reader, writer, _ = idle.pop()
            if not reader.at_eof():
                return reader, writer
            writer.close()
            opened["open"] -= 1
            opened["expired"] += 1
        return None

    def dispatch(i: int) -> None:
        in_flight[i] = due(i)  # until sent; a wait for a connection counts from when it was due
        conn = reusable()
        if conn is not None:
            start_task(i, conn)
        elif opened["open"] < max_connections:
            opened["open"] += 1
            opened["count"] += 1
            opened["max_open"] = max(opened["max_open"], opened["open"])
            start_task(i, None)
        else:
            queue.append(i)
            opened["queued_max"] = max(opened["queued_max"], len(queue))

    i = 0
    while i < total:
        now = clock()
        while i < total and due(i) <= now + EARLY:
            dispatch(i)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, due(i) - EARLY - clock()))
    sent_until = clock()
    if total:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), drain)
    ended = clock()
    unanswered = [begun for index, begun in in_flight.items() if due(index) >= start + warmup]
    latencies.extend(ended - begun for begun in unanswered)  # at least this late: counted, not dropped
    for _, writer, _ in idle:
        writer.close()
    measured_for = max(1e-9, sent_until - (start + warmup))
    counted = len(latencies)
    lag = percentiles(lags)
    return {
        "rate": rate,
        "duration_s": duration,
        "warmup_s": warmup,
        "requests": total,
        "measured": counted,
        "answered": counted - len(unanswered),
        "unanswered": len(unanswered),
        "achieved_rate": round((counted) / measured_for, 1),
        "latency_ms": percentiles(latencies),
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "ok_2xx": sum(n for code, n in statuses.items() if 200 <= code < 300),
        "errors": dict(errors),
        "generator_lag_ms": {"p50": lag["p50"], "p99": lag["p99"], "max": lag["max"]},
        "connections_opened": opened["count"],
        "connections_max_open": opened["max_open"],
        "connections_expired": opened["expired"],
        "queued_max": opened["queued_max"],
        "lines": len(requests),
    }


def run(
    url: str,
    request_file: Path,
    *,
    rate: float,
    duration: float,
    warmup: float = 1.0,
    max_connections: int = 256,
    drain: float = 10.0,
    on_start: Any = None,
) -> dict[str, Any]:
    """One open-loop run in a process of its own; `on_start(popen)` once it is running."""
    argv = [sys.executable, str(BENCH / "openloop.py"), url, str(request_file), "--rate", f"{rate:g}"]
    argv += ["--duration", f"{duration:g}", "--warmup", f"{warmup:g}", "--max-connections", str(max_connections)]
    argv += ["--drain", f"{drain:g}"]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(popen)
    out, err = popen.communicate(timeout=duration + drain + 60)
    ended = time.monotonic()
    line = next((ln for ln in out.splitlines() if ln.startswith("OPENJSON ")), None)
    if popen.returncode != 0 or line is None:
        raise RuntimeError(f"openloop failed ({popen.returncode}): {err.strip()[-2000:]} {out.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("OPENJSON "))
    result["ended_at"] = ended
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Open-loop load: a constant arrival rate, latency from due time.")
    parser.add_argument("url")
    parser.add_argument("file", type=Path)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of arrivals not counted")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for the last answers")
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.warmup >= args.duration:
        parser.error("--rate and --duration must be positive, --warmup shorter than --duration")
    load = _load(args.url, args.file, args.rate, args.duration, args.warmup, args.max_connections, args.drain)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(load)
    else:
        result = uvloop.run(load)
    print("OPENJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
