"""A real HTTP server in front of Label Studio that misbehaves on purpose.

It forwards every request to the real server, except when told to:
- ``fail_next = n``: answer the next n requests with ``status`` without forwarding them;
- ``fail_after_forward = n``: forward the next n requests (the server *does* the work) but
  answer ``status`` (a lost answer: the classic cause of duplicated imports);
- ``delay``: wait this long before answering (a slow server; clients time out);
- ``stall = True``: hold each request, unanswered, until ``release`` is set, then answer
  ``status`` without forwarding it (a server that does not answer: any client time-out fires,
  however late, and nothing reaches the server after the client gave up);
- ``only``: misbehave only for request paths containing this text.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.helpers.waiting import SAFETY_NET_S


class FlakyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail_next = 0
        self.fail_after_forward = 0
        self.status = 500
        self.delay = 0.0
        self.stall = False
        self.release = threading.Event()
        self.only: str | None = None
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    targeted = proxy.only is None or proxy.only in self.path
                    drop = targeted and proxy.fail_next > 0
                    proxy.fail_next -= drop
                    lose = targeted and not drop and proxy.fail_after_forward > 0
                    proxy.fail_after_forward -= lose
                    delay = proxy.delay
                    stall = proxy.stall
                    drop = drop or stall
                if stall:
                    proxy.release.wait(SAFETY_NET_S)
                if delay:
                    time.sleep(delay)
                if not drop:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    r = httpx.request(self.command, proxy.upstream + self.path, headers=headers, content=body,
                                      timeout=600)
                if drop or lose:
                    status, payload, ctype = proxy.status, b'{"detail": "proxy says no"}', "application/json"
                else:
                    status, payload, ctype = r.status_code, r.content, r.headers.get("content-type", "application/json")
                proxy.seen.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
