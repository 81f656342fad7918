"""One HTTP request with a total deadline, for the flag client and the HTTP manifest store.

Socket timeouts bound each read, not the request: a server that trickles a byte every second
would hold a plain ``urllib`` call for as long as it likes. Here every read gets only the
time left before the deadline, and the body is cut off past ``max_bytes``. http.client,
socket and urllib.parse load with the first request, and ssl with the first https one, so a
start that builds a client but makes no request (a state bag payload read from its inline
frames, a flag set from the file cache) never pays for them. (Name resolution is the one step
no socket timeout covers; point the SDK at a name your resolver answers quickly, or at an
address.)
"""

from __future__ import annotations

import io
import time

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    import http.client
    import socket
    import urllib.parse
    from collections.abc import Mapping
    from typing import Any


class FetchError(Exception):
    """The request did not produce a complete response in time."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """Enough of a socket for http.client, with every operation bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        # http.client closes the connection as soon as it sees "Connection: close", before
        # the body is read; a real socket's makefile() keeps the descriptor open for the
        # reader, and so do we: request() closes the socket once the body is in.
        pass


_context: Any = None


def _ssl_context() -> Any:
    """One verifying context per process: loading the CA bundle costs milliseconds."""
    global _context
    if _context is None:
        import ssl  # only for https URLs

        _context = ssl.create_default_context()
    return _context


def _connection(
    url: urllib.parse.SplitResult, deadline: float
) -> tuple[http.client.HTTPConnection, socket.socket]:
    import http.client

    timeout = max(deadline - time.monotonic(), 0.001)
    if url.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=timeout, context=_ssl_context()
        )
    elif url.scheme == "http":
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    else:
        raise FetchError(f"unsupported URL scheme {url.scheme!r}")
    conn.connect()
    sock = conn.sock
    conn.sock = _DeadlineSocket(sock, deadline)
    return conn, sock


def get(url: str, headers: Mapping[str, str], *, timeout: float, max_bytes: int) -> Response:
    """GET ``url``; raises FetchError for anything short of a complete response in time."""
    return request("GET", url, headers, timeout=timeout, max_bytes=max_bytes)


def request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
    *,
    timeout: float,
    max_bytes: int,
) -> Response:
    """One request; raises FetchError for anything short of a complete response in time."""
    import http.client
    import urllib.parse

    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = sock = None
    try:
        conn, sock = _connection(parts, deadline)
        conn.request(method, path, body=body, headers={**headers, "Connection": "close"})
        response = conn.getresponse()
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"response of {length} bytes is over the {max_bytes}-byte limit")
        body = response.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise FetchError(f"response is over the {max_bytes}-byte limit")
        if length is not None and length.isdigit() and len(body) != int(length):
            raise FetchError(f"response truncated: {len(body)} of {length} bytes")
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers refused and reset connections and every timeout; HTTPException a
        # malformed or truncated response (IncompleteRead included).
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    finally:
        if conn is not None:
            conn.close()
        if sock is not None:
            sock.close()
