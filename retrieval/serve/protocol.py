"""uvicorn's HTTP/1.1 protocols with read limits on headers: what a client must do before the app
sees its request.

uvicorn arms a timer only between requests (``timeout_keep_alive``, cancelled by the first byte
of the next request), so a client that trickles its request line or headers holds a connection
forever, and enough of them take every connection slot (``--max-connections``: every other
request then gets 503). :func:`guarded_protocol` subclasses uvicorn's h11 or httptools protocol so
that, on each connection:

- the headers of each request must be complete within ``header_timeout_s`` of the connection
  opening or of the previous answer: after that the connection is closed, with a 408 when part of
  a request had come (an idle keep-alive connection is closed silently by uvicorn's own
  ``timeout_keep_alive`` first, when it is shorter);
- the headers may take at most ``max_header_bytes``: beyond that 431 and close;
- uvicorn's plain-text answers (400 for malformed HTTP, 503 past ``limit_concurrency``) become
  problem-details bodies (:mod:`braid.retrieval.serve.errors`), the same shape as the app's.

The body is the app's business (:mod:`braid.retrieval.serve.guard`: ``body_timeout_s``). These
classes use uvicorn's protocol attributes (``cycle``, ``transport``, ``connections``, ``tasks``,
``limit_concurrency``, ``app``, ``on_response_complete``, ``send_400_response``); they are tested
with both protocols of the installed uvicorn (tests/test_service_limits.py).
"""

from __future__ import annotations

from braid.retrieval.serve.errors import PROBLEM_MEDIA_TYPE, problem_body, title

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 << 10


class _HeaderLimits:
    """Mixin over a uvicorn HTTP protocol class (see the module docstring)."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_header_bytes: int = MAX_HEADER_BYTES

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timer = None
        self._header_bytes = 0
        self._partial = False
        limit = self.limit_concurrency
        if limit is not None:
            # Answered by the wrapper below, in the one error shape, instead of uvicorn's plain text.
            self.limit_concurrency = None
            self.app = _connection_limit(self.app, self.connections, self.tasks, limit)

    # ------------------------------------------------------------ state
    def _request_active(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_bytes = 0
        self._partial = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._request_active():
            return
        if self._partial:
            self._send_problem(408, "request_timeout", f"the request headers did not arrive within {self.header_timeout_s:g} s (header timeout)")
        else:
            self.transport.close()

    def _send_problem(self, status: int, code: str, detail: str) -> None:
        """Write a problem-details answer straight to the socket and close it (no request cycle runs)."""
        body = problem_body(status, code, detail)
        head = [f"HTTP/1.1 {status} {title(status)}\r\n".encode("ascii")]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(f"content-type: {PROBLEM_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("ascii"))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    # ------------------------------------------------------------ protocol events
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        waiting = not self._request_active()
        if waiting:
            self._partial = True
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._request_active():
            self._cancel_header_timer()
        elif waiting and self._header_bytes > self.max_header_bytes:
            self._cancel_header_timer()
            self._send_problem(431, "headers_too_large", f"the request headers are over {self.max_header_bytes} bytes")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._request_active():
            self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._cancel_header_timer()
        self._send_problem(400, "bad_http", f"{msg.rstrip('.')}: not a valid HTTP/1.1 request")


def _connection_limit(app, connections, tasks, limit: int):
    """``app`` behind uvicorn's ``limit_concurrency`` rule (503 once ``limit`` connections are open
    or ``limit`` requests run), answering in the problem-details shape."""
    body = problem_body(503, "too_many_connections", f"the server holds its maximum of {limit} connections or requests (--max-connections); retry later")
    head = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close"), (b"retry-after", b"1")]

    async def limited(scope, receive, send):
        # uvicorn counts before it adds this request's task; here the task is already counted.
        if scope["type"] == "http" and (len(connections) >= limit or len(tasks) > limit):
            await send({"type": "http.response.start", "status": 503, "headers": head})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return limited


def guarded_protocol(http: str | type = "auto", header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES) -> type:
    """A uvicorn HTTP protocol class (for ``uvicorn.Config(http=...)``) with the header limits of
    this module. ``http``: ``"auto"`` (httptools when installed), ``"h11"``, ``"httptools"`` or a
    uvicorn protocol class."""
    from braid.data.errors import OptionError

    if isinstance(header_timeout_s, bool) or not isinstance(header_timeout_s, (int, float)) or not header_timeout_s > 0:
        raise OptionError("header_timeout_s", header_timeout_s, "a number of seconds > 0")
    if isinstance(max_header_bytes, bool) or not isinstance(max_header_bytes, int) or max_header_bytes <= 0:
        raise OptionError("max_header_bytes", max_header_bytes, "a positive integer")
    if http == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            http = "h11"
        else:
            http = "httptools"
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    elif http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    elif isinstance(http, type):
        base = http
    else:
        raise OptionError("http", http, "auto, h11 or httptools")
    return type(f"Guarded{base.__name__}", (_HeaderLimits, base), {"header_timeout_s": float(header_timeout_s), "max_header_bytes": max_header_bytes})
