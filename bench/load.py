"""A small HTTP/1.1 load generator (keep-alive, raw asyncio sockets), run as its own
process so it does not share the server's interpreter: ``python -m bench.load``.

GET by default; ``--method POST --bodies FILE`` sends JSON bodies, one per line of FILE,
taken in turn (a different subject per call), and ``--header 'Name: value'`` (repeatable)
adds headers. Prints one JSON object: requests, errors, seconds, calls_per_s, p50_ms,
p99_ms. Cheap per request (every request's bytes are built before the clock starts), so
on 2 cores most of the CPU is left to the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


async def _worker(
    host: str, port: int, requests: Iterator[bytes], stop_at: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            request = next(requests)
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def build_requests(
    host: str,
    port: int,
    path: str,
    token: str | None,
    method: str = "GET",
    bodies: Sequence[bytes] = (),
    headers: Sequence[str] = (),
) -> list[bytes]:
    """The raw requests to send in turn: one per body (or a single bodiless one)."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json", *headers]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if not bodies:
        return [("\r\n".join(head) + "\r\n\r\n").encode()]
    out = []
    for body in bodies:
        lines = [*head, "Content-Type: application/json", f"Content-Length: {len(body)}"]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


async def run(
    host: str,
    port: int,
    path: str,
    token: str | None,
    connections: int,
    seconds: float,
    *,
    method: str = "GET",
    bodies: Sequence[bytes] = (),
    headers: Sequence[str] = (),
) -> dict:
    requests = itertools.cycle(build_requests(host, port, path, token, method, bodies, headers))
    lat: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_worker(host, port, requests, stop_at, lat, errors) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    lat.sort()
    n = len(lat)
    return {
        "requests": n,
        "errors": len(errors),
        "error_statuses": sorted(set(errors))[:5],
        "seconds": round(elapsed, 3),
        "calls_per_s": round(n / elapsed, 1),
        "p50_ms": round(lat[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--token")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--bodies", type=Path, help="a file of JSON bodies, one per line, sent in turn")
    ap.add_argument("--header", action="append", default=[], help="'Name: value' (ASCII), repeatable")
    a = ap.parse_args()
    bodies = [line.encode() for line in a.bodies.read_text("utf-8").splitlines() if line] if a.bodies else []
    out = asyncio.run(
        run(
            a.host, a.port, a.path, a.token, a.connections, a.seconds,
            method=a.method.upper(), bodies=bodies, headers=a.header,
        )
    )  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
