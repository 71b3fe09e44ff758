"""Loopback stand-ins for the two download sources: a Hugging Face hub and a BEIR zip mirror.

``HubServer`` answers the requests huggingface_hub (1.x) and transformers make for a model repo, in the
hub's URL layout: ``/api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (repo info with its
file list), ``/api/models/{repo}/tree/{rev}`` (file listing), and ``/{repo}/resolve/{rev}/{path}`` (HEAD
for the metadata: ``X-Repo-Commit``, ``ETag``, ``Content-Length``; GET for the bytes). Unknown repos get
404 with ``X-Error-Code: RepoNotFound``, unknown files ``EntryNotFound``, as the hub answers. Point a
process at it with ``HF_ENDPOINT=server.endpoint`` (and ``HF_HUB_OFFLINE=0``).

``FileServer`` serves fixed bytes at fixed paths (a BEIR zip at ``/beir/NAME.zip``).

Both record every request path in ``requests``; no test reaches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Loopback:
    handler: type

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, with_body: bool = True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body and body:
            self.wfile.write(body)

    def _json(self, obj, with_body: bool) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", "X-Repo-Commit": COMMIT}, with_body)

    def _answer(self, with_body: bool) -> None:
        hub: HubServer = self.server.owner  # type: ignore[attr-defined]
        hub.requests.append(self.path)
        parts = self.path.split("?")[0].strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo_id = "/".join(parts[2:4]) if api else "/".join(parts[:2])
        folder = hub.repos.get(repo_id)
        if folder is None:
            return self._send(404, headers={"X-Error-Code": "RepoNotFound"}, with_body=with_body)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        rest = parts[4:] if api else parts[2:]
        if api and (not rest or rest[0] == "revision"):
            return self._json({"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}, with_body)
        if api and rest[:1] == ["tree"]:
            sub = "/".join(rest[2:])
            listed = [f for f in files if not sub or f.startswith(sub + "/")]
            return self._json([{"type": "file", "path": f, "size": (folder / f).stat().st_size} for f in listed], with_body)
        if not api and rest[:1] == ["resolve"] and len(rest) >= 3:
            path = folder / "/".join(rest[2:])
            if path.is_file():
                data = path.read_bytes()
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
                return self._send(200, data, headers, with_body)
        self._send(404, headers={"X-Repo-Commit": COMMIT, "X-Error-Code": "EntryNotFound"}, with_body=with_body)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)


class HubServer(_Loopback):
    """A hub serving ``repos`` ({"owner/name": local model folder}) at revision ``main`` = :data:`COMMIT`."""

    handler = _HubHandler

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        super().__init__()

    def downloaded(self, repo_id: str) -> list[str]:
        """The files of ``repo_id`` fetched with GET or HEAD through ``resolve``, in request order."""
        prefix = f"/{repo_id}/resolve/"
        return [p[len(prefix) :].split("/", 1)[1] for p in self.requests if p.startswith(prefix)]


class _FileHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: FileServer = self.server.owner  # type: ignore[attr-defined]
        server.requests.append(self.path)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FileServer(_Loopback):
    """Serves ``files`` ({url path: bytes})."""

    handler = _FileHandler

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        super().__init__()
