"""Load generators: wrk (when installed) and a small asyncio one, both replaying a request file.

A request file has one request per line, tab-separated: METHOD, PATH, BODY (may be empty), then
"Name: value" headers. Both generators keep `connections` keep-alive HTTP/1.1 connections busy for
`duration` seconds, cycling through the file, and answer the same summary:

    {"generator", "requests", "duration_s", "rps", "latency_ms": {p50, p90, p99, p999, max, mean},
     "statuses": {"200": n, …}, "errors": {…}, "sent", "lines"}

As a program (the asyncio generator, run in its own process so that it never shares a loop):

    python bench/loadgen.py URL FILE --connections 64 --duration 20 [--max-requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WRK = shutil.which("wrk")


def request_line(method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None) -> str:
    text = body.decode() if isinstance(body, bytes) else body
    if "\t" in text or "\n" in text or "\t" in path:
        raise ValueError("tabs and newlines cannot go in a request line")
    fields = [method, path, text, *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return "\t".join(fields)


def write_requests(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def run(
    generator: str,
    url: str,
    request_file: Path,
    *,
    connections: int,
    duration: int,
    threads: int = 1,
    max_requests: int | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """Run one load; `on_start(popen)` is called once the generator process is running."""
    if generator == "wrk":
        threads = max(1, min(threads, connections))
        argv = [WRK or "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
        argv += ["-s", str(BENCH / "replay.lua"), url, "--", str(request_file), str(threads)]
    else:
        argv = [sys.executable, str(BENCH / "loadgen.py"), url, str(request_file)]
        argv += ["--connections", str(connections), "--duration", str(duration)]
        if max_requests is not None:
            argv += ["--max-requests", str(max_requests)]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(popen)
    out, err = popen.communicate(timeout=duration + 120)
    ended = time.monotonic()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if popen.returncode != 0 or line is None:
        raise RuntimeError(f"{generator} failed ({popen.returncode}): {err.strip()[-2000:]} {out.strip()[-2000:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    statuses = {str(k): v for k, v in raw["statuses"].items()}
    return {
        "generator": "wrk" if generator == "wrk" else "asyncio",
        "threads": threads if generator == "wrk" else 1,
        "connections": connections,
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1) if seconds > 0 else 0.0,
        "latency_ms": {key: round(lat[key] / 1000, 3) for key in ("p50", "p90", "p99", "p999", "max", "mean")},
        "statuses": statuses,
        "ok_2xx": sum(n for code, n in statuses.items() if code.startswith("2")),
        "errors": raw["errors"],
        # wrk calls request() once before the run to check the script (its answer is never sent).
        "sent": raw["sent"] - (1 if generator == "wrk" else 0),
        "lines": raw["lines"],
        "ended_at": ended,  # monotonic, for the CPU window
    }


# -- the asyncio generator ------------------------------------------------------------------------


def _parse_lines(path: Path, host: str) -> list[bytes]:
    out = []
    for line in path.read_text().splitlines():
        if not line:
            continue
        fields = line.split("\t")
        method, target, body = fields[0], fields[1], fields[2].encode()
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        head += fields[3:]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return out


def _percentile(sorted_values: list[int], pct: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for raw in lines[1:]:
        name, _, value = raw.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _load(url: str, path: Path, connections: int, duration: float, max_requests: int | None) -> dict[str, Any]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    requests = _parse_lines(path, hostport)
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    counter = {"next": 0}
    limit = max_requests if max_requests is not None else float("inf")
    started = time.perf_counter()
    stop_at = started + duration

    async def worker() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            errors["connect"] += 1
            return
        try:
            while time.perf_counter() < stop_at and counter["next"] < limit:
                data = requests[counter["next"] % len(requests)]
                counter["next"] += 1
                t0 = time.perf_counter_ns()
                try:
                    writer.write(data)
                    status = await asyncio.wait_for(_read_response(reader), 10)
                except TimeoutError:
                    errors["timeout"] += 1
                    return
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors["read"] += 1
                    return
                latencies.append((time.perf_counter_ns() - t0) // 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if not 200 <= status < 400:
                    errors["status"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    mean = sum(latencies) / len(latencies) if latencies else 0.0
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": 0,
        "sent": counter["next"],
        "lines": len(requests),
        "errors": errors,
        "latency_us": {
            "min": latencies[0] if latencies else 0,
            "mean": mean,
            "max": latencies[-1] if latencies else 0,
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "p999": _percentile(latencies, 99.9),
        },
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The asyncio load generator: replay a request file.")
    parser.add_argument("url")
    parser.add_argument("file", type=Path)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int)
    args = parser.parse_args()
    load = _load(args.url, args.file, args.connections, args.duration, args.max_requests)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(load)
    else:
        result = uvloop.run(load)
    print("WRKJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
