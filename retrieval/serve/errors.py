"""The one shape of every error answer of ``braid serve``: RFC 9457 problem details.

Every error answer of the service (status 400 and up) has this body, served as
``application/problem+json``. That holds for the app (validation, options, overload, timeouts),
for the guard middleware (authentication, body limits and deadline) and for the HTTP protocol
layer (malformed HTTP, slow or oversized headers, too many connections)::

    {"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
     "code": "invalid_request", "detail": "query: must contain a visible character ...",
     "errors": [{"loc": ["body", "query"], "msg": "...", "type": "value_error"}]}

``status`` repeats the HTTP status and ``title`` is its standard phrase (``http.HTTPStatus``; RFC 9457 with
``type: about:blank``). ``detail`` says what was wrong in words: the field, the value's problem or
the limit that was hit. ``code`` is a stable machine-readable name, one of :data:`CODES`.
``errors`` is there only for validation errors (422 ``invalid_request``): one item per problem.

Messages never carry a server path: :func:`scrub_paths` cuts absolute paths to their last
component, and text that cannot be encoded (lone surrogates echoed from a request) is replaced
with U+FFFD, so writing an error never fails.
"""

from __future__ import annotations

import http
import json
import re
from typing import Any, Sequence

PROBLEM_MEDIA_TYPE = "application/problem+json"

# code -> (status, when)
CODES: dict[str, tuple[int, str]] = {
    "bad_http": (400, "the request is not valid HTTP/1.1 (request line, headers or Content-Length)"),
    "bad_option": (400, "an option the chosen retriever or pipeline cannot take"),
    "unauthorized": (401, "no bearer token, and the server requires one (WWW-Authenticate says so)"),
    "forbidden": (403, "a bearer token that is not the server's"),
    "writes_disabled": (403, "a write (POST/DELETE /documents) to a server started without --write-token"),
    "locked": (409, "another writer holds the index's writer lock"),
    "bad_documents": (400, "documents to add are invalid (the detail names the record and field), or a write failed on the index"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "the endpoint does not take this method"),
    "request_timeout": (408, "the headers or the body did not arrive within the server's read timeouts"),
    "body_too_large": (413, "the request body is over max_body_bytes"),
    "invalid_json": (422, "the body is not JSON: malformed, not UTF-8, or a number too long to read"),
    "json_too_deep": (422, "the body nests arrays and objects deeper than the limit"),
    "invalid_request": (422, "a field is missing, of the wrong type, out of range or unknown (see errors)"),
    "response_too_large": (422, "the answer would be over max_response_bytes"),
    "headers_too_large": (431, "the request headers are over the server's limit"),
    "client_closed": (499, "the client left before its answer was ready (nobody reads this one)"),
    "internal_error": (500, "a bug: the server logged it"),
    "overloaded": (503, "every search slot is taken (Retry-After says when to retry)"),
    "too_many_connections": (503, "the server holds its maximum of open connections"),
    "busy_reading": (503, "the server buffers its maximum of request bytes being read"),
    "timeout": (504, "the search was not done within the server's timeout, and was stopped"),
}

_EXTRA_TITLES = {499: "Client Closed Request"}

# An absolute path: POSIX with two or more components, a Windows drive path, or one under ~/.
_PART = r"[^\s/\\:'\"(),;]+"
_ABSOLUTE = re.compile(rf"(?<![\w.~-])(?:/(?:{_PART}/)+|[A-Za-z]:[\\/](?:{_PART}[\\/])*|~/(?:{_PART}/)*)({_PART})")


def title(status: int) -> str:
    """The standard reason phrase of ``status``."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_TITLES.get(status, "Error")


def printable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so that it encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path (``/a/b/c``, ``C:\\a\\b``, ``~/a``) cut to its last component
    (``/search``, one component, is left alone: it names an endpoint, not a file)."""
    return _ABSOLUTE.sub(lambda m: m.group(1), text)


def problem(status: int, code: str, detail: str, errors: Sequence[dict] | None = None) -> dict:
    """The problem-details object of one error answer (see the module docstring)."""
    if code not in CODES:
        raise ValueError(f"unknown error code {code!r}")
    out: dict[str, Any] = {"type": "about:blank", "title": title(status), "status": status, "code": code, "detail": printable(scrub_paths(detail))}
    if errors is not None:
        out["errors"] = [_clean(e) for e in errors]
    return out


def problem_body(status: int, code: str, detail: str, errors: Sequence[dict] | None = None) -> bytes:
    """:func:`problem` encoded as UTF-8 JSON."""
    return json.dumps(problem(status, code, detail, errors), ensure_ascii=False, allow_nan=False).encode("utf-8")


def problem_response(status: int, code: str, detail: str, errors: Sequence[dict] | None = None, headers: dict[str, str] | None = None):
    """A Starlette response carrying :func:`problem` (imports Starlette, so call it inside the app)."""
    from starlette.responses import Response

    return Response(problem_body(status, code, detail, errors), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _clean(value):
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    return printable(str(value))
