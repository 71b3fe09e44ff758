"""``braid serve``: the HTTP search service (:mod:`braid.retrieval.serve.app`) under uvicorn.

Registered in :mod:`braid.cli.main`; also runnable as ``python -m braid.cli.serve``. fastapi and
uvicorn load inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from braid.cli.common import POSITIVE_FLOAT, POSITIVE_INT, CommandError, command, option_group

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


@command("serve")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--pipeline", "pipelines", multiple=True, type=click.Path(path_type=Path, dir_okay=False), help="A TOML pipeline file to serve, read once at start (repeatable). Requests name it by its file stem.")
@click.option("--default", "default", default=None, help="Retriever or pipeline for requests that name none (default: hybrid when the index has several retrievers).")
@click.option("--no-warm", is_flag=True, help="Skip the warm-up query per retriever and pipeline at start (models then load on the first request that needs them).")
@click.option("--token", envvar="BRAID_TOKEN", show_envvar=True, default=None, help="Bearer token every endpoint then requires (401 without, 403 wrong). Prefer BRAID_TOKEN or --token-file: a command line is visible to other users.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File whose one line is the bearer token (instead of --token).")
@click.option("--write-token", envvar="BRAID_WRITE_TOKEN", show_envvar=True, default=None, help="Bearer token of POST/DELETE /documents (add, update, delete documents); without it the server takes no writes.")
@limit_options
@server_options
def serve_cmd(index_dir, pipelines, default, no_warm, token, token_file, write_token, limits, server):
    """Serve INDEX_DIR over HTTP: POST /search, POST /batch_search, GET /health, GET /info, /docs;
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
    app = create_app(index_dir, pipelines=pipelines, default=default, warm=not no_warm, auth=load_auth(token, token_file, write_token), **limits)
    catalog = app.state.catalog
    click.echo(
        f"braid serve: {index_dir} ({app.state.searcher.num_docs} docs); retrievers: {', '.join(catalog.retrievers)}; "
        f"pipelines: {', '.join(catalog.pipelines) or 'none'}; default: {catalog.default}",
        err=True,
    )
    server = dict(server)
    http = guarded_protocol(server.pop("http"), header_timeout_s=server.pop("header_timeout_s"))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, lifespan="on", http=http, **server))
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let running requests finish (up to
    # --graceful-timeout), then run the app's shutdown (which stops the search threads).
    uvicorn_server.run()
    if not uvicorn_server.started:
        sys.exit(1)


if __name__ == "__main__":
    serve_cmd()
