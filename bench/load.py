"""A small HTTP/1.1 load generator (keep-alive, raw asyncio sockets), run as its own
process so it does not share the server's interpreter: ``python -m bench.load``.

Prints one JSON object: requests, errors, seconds, calls_per_s, p50_ms, p99_ms.
Cheap per request (the request bytes are built once), so on 2 cores most of the CPU
is left to the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


async def _worker(host: str, port: int, request: bytes, stop_at: float, lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
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


async def run(host: str, port: int, path: str, token: str | None, connections: int, seconds: float) -> dict:
    headers = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json"]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode()
    lat: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_worker(host, port, request, stop_at, lat, errors) for _ in range(connections)))
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
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.host, a.port, a.path, a.token, a.connections, a.seconds))))


if __name__ == "__main__":
    main()
