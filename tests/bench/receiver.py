"""The load receiver, its own process: answers 200 at once and logs every request to a file.

One line per request: `arrival sent_at phase path delivery_id event_id`, flushed a few times
a second so that the bench can follow it live. A second port accepts connections and never
answers (the isolation phase's dead endpoint); each accepted connection logs an `H` line.

    python -m tests.bench.receiver --port P --hang-port H --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path

import orjson
from aiohttp import web

HEADER = "X-Hookline-Delivery"
FLUSH_EVERY = 0.2


class RequestLog:
    """Buffers log lines in memory and appends them to the file every FLUSH_EVERY seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buffer: list[str] = []
        self.file = open(path, "a", buffering=1 << 20)

    def add(self, line: str) -> None:
        self.buffer.append(line)

    def flush(self) -> None:
        if self.buffer:
            lines, self.buffer = self.buffer, []
            self.file.write("".join(lines))
            self.file.flush()

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self.flush()

    def close(self) -> None:
        self.flush()
        self.file.close()


def make_handler(log: RequestLog):  # type: ignore[no-untyped-def]
    ok = b"ok"

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        arrival = time.time()
        sent_at, phase, event_id = 0.0, "-", "-"
        try:
            obj = orjson.loads(body)
            event_id = str(obj.get("event_id") or "-")
            if "phase" not in obj and isinstance(obj.get("data"), dict):
                obj = obj["data"]  # an inbound call's event carries the caller's body there
            sent_at = float(obj.get("sent_at") or 0.0)
            phase = str(obj.get("phase") or "-")
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            pass
        delivery = request.headers.get(HEADER, "-")
        log.add(f"{arrival:.6f} {sent_at:.6f} {phase} {request.path} {delivery} {event_id}\n")
        return web.Response(status=200, body=ok)

    return handle


async def serve(port: int, hang_port: int, out: Path) -> None:
    log = RequestLog(out)
    loop = asyncio.get_running_loop()
    server = web.Server(make_handler(log), access_log=None)
    http = await loop.create_server(server, "127.0.0.1", port, backlog=2048)
    hung: set[asyncio.StreamWriter] = set()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.add(f"H {time.time():.6f}\n")
        hung.add(writer)
        try:
            while await reader.read(65536):
                pass  # read requests, answer none
        finally:
            hung.discard(writer)
            writer.close()

    hang = await asyncio.start_server(never_answer, "127.0.0.1", hang_port, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = asyncio.create_task(log.flush_forever())
    print(f"receiver ready on 127.0.0.1:{port} (never answers on {hang_port})", flush=True)
    await stop.wait()
    flusher.cancel()
    http.close()
    hang.close()
    for writer in list(hung):
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.shutdown(1.0), 2.0)
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang-port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.hang_port, args.out))


if __name__ == "__main__":
    main()
