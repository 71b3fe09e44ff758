"""``braid serve``: the HTTP search service (:mod:`braid.retrieval.serve.app`) under uvicorn.

Registered in :mod:`braid.cli.main`; also runnable as ``python -m braid.cli.serve``. fastapi and
uvicorn load inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from braid.cli.common import POSITIVE_FLOAT, POSITIVE_INT, CommandError, command, option_group, runtime_option

limit_options = option_group(
    "limits",
    click.option("--max-concurrency", default=2, show_default=True, type=POSITIVE_INT, help="Searches running at once (worker threads)."),
    click.option("--queue-size", default=32, show_default=True, type=click.IntRange(min=0), help="Admitted searches waiting for a worker; beyond max-concurrency + queue-size requests get 503."),
    click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=POSITIVE_FLOAT, help="Seconds before a search is answered with 504."),
    click.option("--max-k", default=1000, show_default=True, type=POSITIVE_INT, help="Largest k a request may ask for."),
    click.option("--max-batch", default=256, show_default=True, type=POSITIVE_INT, help="Most queries in one /batch_search."),
    click.option("--max-body-bytes", default=1 << 20, show_default=True, type=POSITIVE_INT, help="Largest request body (413 beyond)."),
    click.option("--max-response-bytes", default=8 << 20, show_default=True, type=POSITIVE_INT, help="Largest answer; a batch whose answer grows past it is refused with 422 and its work stopped."),
    click.option("--max-buffered-bytes", default=64 << 20, show_default=True, type=POSITIVE_INT, help="Request-body bytes held at once by all requests being read (503 beyond)."),
    click.option("--body-timeout", "body_timeout_s", default=10.0, show_default=True, type=POSITIVE_FLOAT, help="Seconds a client has to send a request's body after its headers; then 408 and close."),
)
limit_options.__doc__ = """The service's admission and request limits (``limits``: keywords of ``create_app``)."""

server_options = option_group(
    "server",
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 exposes the server to the network)."),
    click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port."),
    click.option("--max-connections", "limit_concurrency", default=2048, show_default=True, type=POSITIVE_INT, help="Open connections or running requests before the server answers 503 (a backstop behind the search queue; about 14 KiB each; needs ulimit -n above it)."),
    click.option("--header-timeout", "header_timeout_s", default=10.0, show_default=True, type=POSITIVE_FLOAT, help="Seconds a client has to send a request's headers (from connecting or the previous answer); then 408 and close."),
    click.option("--keep-alive-timeout", "timeout_keep_alive", default=5.0, show_default=True, type=POSITIVE_FLOAT, help="Seconds an idle keep-alive connection stays open."),
    click.option("--graceful-timeout", "timeout_graceful_shutdown", default=15.0, show_default=True, type=POSITIVE_FLOAT, help="On SIGTERM/SIGINT: seconds to let running requests finish."),
    click.option("--http", default="auto", show_default=True, type=click.Choice(["auto", "h11", "httptools"]), help="uvicorn HTTP parser (auto: httptools when installed)."),
    click.option("--loop", default="auto", show_default=True, type=click.Choice(["auto", "asyncio", "uvloop"]), help="uvicorn event loop (auto: uvloop when installed)."),
    click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request."),
    click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"])),
)
server_options.__doc__ = """How uvicorn listens and logs (``server``: keywords of ``uvicorn.Config``)."""


def resolve_query_threads(value: str, max_concurrency: int) -> int:
    """``--query-threads``: a positive integer, or ``auto`` = the usable CPU cores // ``max_concurrency`` (at least 1).

    Measured on 2 cores (docs/benchmarks/serve.md): at one thread per query encoder instead of two, eight clients
    got 6-7 % more hybrid answers per second at 7 % less server CPU per answer; a lone client 14-21 % fewer."""
    import os

    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, int(max_concurrency)))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: a positive integer or 'auto'", param_hint="--query-threads")
    return n


@command("serve")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--pipeline", "pipelines", multiple=True, type=click.Path(path_type=Path, dir_okay=False), help="A TOML pipeline file to serve, read once at start (repeatable). Requests name it by its file stem.")
@click.option("--default", "default", default=None, help="Retriever or pipeline for requests that name none (default: hybrid when the index has several retrievers).")
@click.option("--no-warm", is_flag=True, help="Skip the warm-up query per retriever and pipeline at start (models then load on the first request that needs them).")
@click.option("--token", envvar="BRAID_TOKEN", show_envvar=True, default=None, help="Bearer token every endpoint then requires (401 without, 403 wrong). Prefer BRAID_TOKEN or --token-file: a command line is visible to other users.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File whose one line is the bearer token (instead of --token).")
@click.option("--open", "open_page", is_flag=True, help="Open the search page (/) in a web browser once the server listens.")
@click.option("--write-token", envvar="BRAID_WRITE_TOKEN", show_envvar=True, default=None, help="Bearer token of POST/DELETE /documents (add, update, delete documents); without it the server takes no writes.")
@runtime_option
@click.option("--query-threads", default="auto", show_default=True, metavar="N|auto",
              help="Intra-op threads of each query encoder; auto: the CPU cores divided by --max-concurrency (at least 1), so concurrent searches do not fight over the cores.")
@limit_options
@server_options
def serve_cmd(index_dir, pipelines, default, no_warm, token, token_file, open_page, write_token, runtime, query_threads, limits, server):
    """Serve INDEX_DIR over HTTP: the search page at /, POST /search, POST /batch_search, GET /health, GET /info, /docs;
    with --write-token also POST /documents and DELETE /documents."""
    import logging

    try:
        import uvicorn
    except ImportError:
        raise CommandError("braid serve needs the serve extra: pip install 'braid[serve]'") from None
    from braid.retrieval.serve.app import create_app
    from braid.retrieval.serve.auth import load_auth
    from braid.retrieval.serve.protocol import guarded_protocol

    logging.basicConfig(level=server["log_level"].upper(), format="%(levelname)s:     %(name)s: %(message)s")
    threads = resolve_query_threads(query_threads, limits["max_concurrency"])
    app = create_app(index_dir, pipelines=pipelines, default=default, warm=not no_warm, auth=load_auth(token, token_file, write_token), runtime=runtime,
                     query_threads=threads, **limits)  # fmt: skip
    catalog = app.state.catalog
    click.echo(
        f"braid serve: {index_dir} ({app.state.searcher.num_docs} docs); retrievers: {', '.join(catalog.retrievers)}; "
        f"pipelines: {', '.join(catalog.pipelines) or 'none'}; default: {catalog.default}",
        err=True,
    )
    server = dict(server)
    http = guarded_protocol(server.pop("http"), header_timeout_s=server.pop("header_timeout_s"))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, lifespan="on", http=http, **server))
    if open_page:
        open_when_started(uvicorn_server, server["host"], server["port"])
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let running requests finish (up to
    # --graceful-timeout), then run the app's shutdown (which stops the search threads).
    uvicorn_server.run()
    if not uvicorn_server.started:
        sys.exit(1)


@command("mcp")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--transport", default="stdio", show_default=True, type=click.Choice(["stdio", "http"]), help="stdio (an agent starts this command) or streamable HTTP at /mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP transport: address to listen on.")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535), help="HTTP transport: TCP port.")
@click.option("--pipeline", "pipelines", multiple=True, type=click.Path(path_type=Path, dir_okay=False), help="A TOML pipeline file to offer (repeatable).")
@click.option("--default", "default", default=None, help="Retriever or pipeline when a call names none (default: hybrid when the index has several retrievers).")
@click.option("--no-warm", is_flag=True, help="Skip the warm-up query per retriever and pipeline at start.")
@click.option("--token", envvar="BRAID_TOKEN", show_envvar=True, default=None, help="HTTP transport: bearer token every request then requires (as for braid serve).")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File whose one line is the bearer token (instead of --token).")
@click.option("--max-k", default=100, show_default=True, type=POSITIVE_INT, help="Most hits one search call may ask for.")
@click.option("--max-document-chars", default=20000, show_default=True, type=POSITIVE_INT, help="Longest text get_document returns.")
@runtime_option
def mcp_cmd(index_dir, transport, host, port, pipelines, default, no_warm, token, token_file, max_k, max_document_chars, runtime):
    """Serve INDEX_DIR to LLM agents over the Model Context Protocol: tools search, get_document, describe_index."""
    import logging

    from braid.retrieval.serve.auth import load_auth
    from braid.retrieval.serve.mcp_server import McpLimits, create_mcp_server, streamable_http_app

    auth = load_auth(token, token_file)
    if auth.enabled and transport == "stdio":
        raise CommandError("--token applies to --transport http (a stdio server is reached only by the process that started it)")
    logging.basicConfig(level="WARNING", format="%(levelname)s: %(name)s: %(message)s")  # stderr: stdout is the protocol
    limits = McpLimits(max_k=max_k, max_document_chars=max_document_chars)
    server = create_mcp_server(index_dir, limits=limits, pipelines=pipelines, default=default, warm=not no_warm, runtime=runtime)
    catalog = server.braid_catalog
    click.echo(f"braid mcp: {index_dir} over {transport}; tools search, get_document, describe_index; retrievers and pipelines: {', '.join(catalog.names)}", err=True)
    if transport == "stdio":
        server.run("stdio")
        return
    try:
        import uvicorn
    except ImportError:
        raise CommandError("braid mcp --transport http needs the serve extra: pip install 'braid[serve]'") from None
    click.echo(f"braid mcp: listening on http://{host}:{port}/mcp" + (" (bearer token required)" if auth.enabled else ""), err=True)
    uvicorn.run(streamable_http_app(server, auth, host=host), host=host, port=port, log_level="warning")


def page_url(host: str, port: int) -> str:
    """The search page's address for a server listening on ``host:port`` (a wildcard address opens as loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def open_when_started(uvicorn_server, host: str, port: int, timeout_s: float = 120.0) -> None:
    """Open the search page in a browser (Python's webbrowser) from a thread, once ``uvicorn_server`` listens
    (on the port it got, which ``--port 0`` leaves to the system)."""
    import threading
    import time
    import webbrowser

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout_s
        while not uvicorn_server.started and not uvicorn_server.should_exit and time.monotonic() < deadline:
            time.sleep(0.1)
        if not uvicorn_server.started:
            return
        bound = port
        for srv in getattr(uvicorn_server, "servers", []):
            for sock in getattr(srv, "sockets", []) or []:
                bound = sock.getsockname()[1]
        url = page_url(host, bound)
        click.echo(f"braid serve: opening {url}", err=True)
        if not webbrowser.open(url):
            click.echo(f"braid serve: no browser could be opened; visit {url}", err=True)

    threading.Thread(target=wait_then_open, name="braid-open-page", daemon=True).start()


if __name__ == "__main__":
    serve_cmd()
