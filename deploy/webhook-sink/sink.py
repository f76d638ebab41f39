"""A stand-in for the pager and the ticket queue: records Alertmanager webhook notifications.

POST /<receiver> (e.g. /pager, /ticket) stores the JSON body under that receiver and logs one
line to stdout. GET /received answers every stored notification by receiver, GET
/received/<receiver> one receiver's, DELETE /received forgets them all; GET /healthz answers
200. Standard library only, so it runs in a bare python image and in tests.

    python deploy/webhook-sink/sink.py --host 0.0.0.0 --port 9095
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 10 * 1024 * 1024


class Store:
    """Notifications by receiver, shared by the handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_receiver: dict[str, list[object]] = {}

    def add(self, receiver: str, payload: object) -> None:
        with self._lock:
            self._by_receiver.setdefault(receiver, []).append(payload)

    def snapshot(self) -> dict[str, list[object]]:
        with self._lock:
            return {name: list(items) for name, items in self._by_receiver.items()}

    def clear(self) -> None:
        with self._lock:
            self._by_receiver.clear()


def make_handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "webhook-sink"

        def _answer(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.rstrip("/")
            if path == "/healthz":
                self._answer(200, {"status": "ok"})
            elif path == "/received":
                self._answer(200, store.snapshot())
            elif path.startswith("/received/"):
                self._answer(200, store.snapshot().get(path.removeprefix("/received/"), []))
            else:
                self._answer(404, {"error": f"no such path {self.path}"})

        def do_DELETE(self) -> None:
            if self.path.rstrip("/") == "/received":
                store.clear()
                self._answer(200, {"status": "cleared"})
            else:
                self._answer(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            receiver = self.path.strip("/")
            length = int(self.headers.get("Content-Length") or 0)
            if not receiver or "/" in receiver:
                self._answer(404, {"error": "post to /<receiver>, e.g. /pager or /ticket"})
                return
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
                return
            try:
                payload = json.loads(self.rfile.read(length) or b"null")
            except ValueError as exc:
                self._answer(400, {"error": f"body is not JSON: {exc}"})
                return
            store.add(receiver, payload)
            alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
            names = sorted({a.get("labels", {}).get("alertname", "?") for a in alerts})
            status = payload.get("status") if isinstance(payload, dict) else None
            print(json.dumps({"receiver": receiver, "status": status, "alerts": names}),
                  flush=True)
            self._answer(200, {"status": "stored"})

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per notification is printed above; requests are not logged

    return Handler


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0 picks a free one); call serve_forever() on it."""
    return ThreadingHTTPServer((host, port), make_handler(Store()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("WEBHOOK_SINK_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("WEBHOOK_SINK_PORT", "9095")))
    args = parser.parse_args(argv)
    server = serve(args.host, args.port)
    print(f"webhook sink listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
