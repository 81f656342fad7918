"""A local HTTP server that serves flag-set documents, and misbehaves on request."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from typing import Any

from analemma_sdk.flags.spec import flag_set_document, flag_spec


def flag(
    kind: str = "boolean", default: Any = False, *, enabled: bool = True, **fields: Any
) -> dict[str, Any]:
    """A flag spec, on for everyone unless told otherwise (a boolean with no value serves true)."""
    return flag_spec(kind, default, enabled=enabled, **fields)


def document(revision: int = 1, environment: str = "prod", **flags: dict[str, Any]) -> dict[str, Any]:
    return flag_set_document(environment, revision, flags)


def body_and_etag(doc: dict[str, Any]) -> tuple[bytes, str]:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return body, f'"{hashlib.sha256(body).hexdigest()[:40]}"'


class FlagServer:
    """``mode`` picks the behaviour: ok, 500, 401, garbage, wrong_etag, huge, huge_chunked,
    truncated, split (body sent after the headers), slow (sleeps ``delay`` before answering),
    trickle (a byte every ``delay``).

    Telemetry batches: every POST is kept in ``telemetry``; ``stored`` keeps them by batch id as
    the service does (a repeated id changes nothing, answered 200). ``post_status`` answers
    every POST with that status instead (nothing stored); ``post_delay`` holds the answer
    that long after the batch was stored (a slow service whose reply times out)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.mode = "ok"
        self.delay = 2.0
        self.requests: list[dict[str, str]] = []
        self.telemetry: list[dict[str, Any]] = []  # batches POSTed (telemetry is on by default)
        self.stored: dict[str, dict[str, Any]] = {}
        self.post_status = 0
        self.post_delay = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's name
                server.requests.append({k.lower(): v for k, v in self.headers.items()})
                server.answer(self)

            def do_POST(self) -> None:  # the service takes a telemetry batch, as it would
                try:
                    server.take(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                except OSError:
                    pass  # the client gave up waiting, as it may

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def take(self, handler: Any, batch: dict[str, Any]) -> None:
        self.telemetry.append(batch)
        if self.post_status:
            self.send(handler, self.post_status, b'{"error": {"code": "no", "message": "no"}}')
            return
        duplicate = batch["batch"] in self.stored
        self.stored.setdefault(batch["batch"], batch)
        if self.post_delay:
            time.sleep(self.post_delay)
        if duplicate:
            self.send(handler, 200, b'{"accepted": false, "duplicate": true}')
        else:
            self.send(handler, 202, b'{"accepted": true}')

    def counted(self, flag: str) -> int:
        """Evaluations of ``flag`` the service counts: each stored batch once."""
        return sum(
            item["count"]
            for batch in self.stored.values()
            for item in batch["evaluations"]
            if item["flag"] == flag
        )

    def answer(self, handler: Any) -> None:
        body, etag = body_and_etag(self.doc)
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode in ("500", "401"):
            self.send(handler, int(self.mode), b'{"error": "no"}')
        elif handler.headers.get("If-None-Match") == etag and self.mode in ("ok", "slow"):
            self.send(handler, 304, b"", {"ETag": etag})
        else:
            getattr(self, f"_{self.mode}", self._ok)(handler, body, etag)

    def _ok(self, handler: Any, body: bytes, etag: str) -> None:
        self.send(handler, 200, body, {"ETag": etag})

    def _garbage(self, handler: Any, body: bytes, etag: str) -> None:
        garbage = b"<html>gateway says hello</html>"
        self.send(handler, 200, garbage, {"ETag": f'"{hashlib.sha256(garbage).hexdigest()[:40]}"'})

    def _bogus_304(self, handler: Any, body: bytes, etag: str) -> None:
        self.send(handler, 304, b"", {"ETag": '"not-what-you-sent"'})

    def _wrong_etag(self, handler: Any, body: bytes, etag: str) -> None:
        self.send(handler, 200, body, {"ETag": '"0000"'})

    def _huge(self, handler: Any, body: bytes, etag: str) -> None:
        try:
            self.send(handler, 200, b" " * (8 * 1024 * 1024) + body)
        except OSError:
            pass  # the client stopped reading past its limit, as it should

    def _huge_chunked(self, handler: Any, body: bytes, etag: str) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(200):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the client gave up, as it should

    def _truncated(self, handler: Any, body: bytes, etag: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", etag)
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.close_connection = True

    def _split(self, handler: Any, body: bytes, etag: str) -> None:
        """Headers first, the body a moment later: a client reading the body from a socket it
        already closed sees EBADF here."""
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", etag)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(0.05)
        handler.wfile.write(body)
        handler.close_connection = True

    def _trickle(self, handler: Any, body: bytes, etag: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for byte in body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(self.delay)
        except OSError:
            pass  # the client gave up, as it should

    @staticmethod
    def send(handler: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
