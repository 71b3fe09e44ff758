"""``braid serve``: the HTTP search service (:mod:`braid.retrieval.serve.app`) under uvicorn.

Registered in :mod:`braid.cli.main`; also runnable as ``python -m braid.cli.serve``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from braid.data.errors import BraidError


def _fail_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BraidError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be > 0")
    return value


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 exposes the server to the network).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--pipeline", "pipelines", multiple=True, type=click.Path(path_type=Path, dir_okay=False), help="A TOML pipeline file to serve, read once at start (repeatable). Requests name it by its file stem.")
@click.option("--default", "default", default=None, help="Retriever or pipeline for requests that name none (default: hybrid when the index has several retrievers).")
@click.option("--max-concurrency", default=2, show_default=True, type=int, callback=_positive, help="Searches running at once (worker threads).")
@click.option("--queue-size", default=32, show_default=True, type=click.IntRange(min=0), help="Admitted searches waiting for a worker; beyond max-concurrency + queue-size requests get 503.")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=float, callback=_positive, help="Seconds before a search is answered with 504.")
@click.option("--max-k", default=1000, show_default=True, type=int, callback=_positive, help="Largest k a request may ask for.")
@click.option("--max-batch", default=256, show_default=True, type=int, callback=_positive, help="Most queries in one /batch_search.")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=int, callback=_positive, help="Largest request body (413 beyond).")
@click.option("--max-response-bytes", default=8 << 20, show_default=True, type=int, callback=_positive, help="Largest answer; a batch whose answer grows past it is refused with 422 and its work stopped.")
@click.option("--max-buffered-bytes", default=64 << 20, show_default=True, type=int, callback=_positive, help="Request-body bytes held at once by all requests being read (503 beyond).")
@click.option("--header-timeout", "header_timeout_s", default=10.0, show_default=True, type=float, callback=_positive, help="Seconds a client has to send a request's headers (from connecting or the previous answer); then 408 and close.")
@click.option("--body-timeout", "body_timeout_s", default=10.0, show_default=True, type=float, callback=_positive, help="Seconds a client has to send a request's body after its headers; then 408 and close.")
@click.option("--keep-alive-timeout", "keep_alive_s", default=5.0, show_default=True, type=float, callback=_positive, help="Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive).")
@click.option("--token", envvar="BRAID_TOKEN", show_envvar=True, default=None, help="Bearer token every endpoint then requires (401 without, 403 wrong). Prefer BRAID_TOKEN or --token-file: a command line is visible to other users.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File whose one line is the bearer token (instead of --token).")
@click.option("--max-connections", default=2048, show_default=True, type=int, callback=_positive, help="Open connections or running requests before the server answers 503 (a backstop behind the search queue; about 14 KiB each; needs ulimit -n above it).")
@click.option("--graceful-timeout", default=15.0, show_default=True, type=float, callback=_positive, help="On SIGTERM/SIGINT: seconds to let running requests finish.")
@click.option("--no-warm", is_flag=True, help="Skip the warm-up query per retriever and pipeline at start (models then load on the first request that needs them).")
@click.option("--http", "http_impl", default="auto", show_default=True, type=click.Choice(["auto", "h11", "httptools"]), help="uvicorn HTTP parser (auto: httptools when installed).")
@click.option("--loop", "loop_impl", default="auto", show_default=True, type=click.Choice(["auto", "asyncio", "uvloop"]), help="uvicorn event loop (auto: uvloop when installed).")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@_fail_cleanly
def serve_cmd(index_dir, host, port, pipelines, default, max_concurrency, queue_size, timeout_s, max_k, max_batch, max_body_bytes, max_response_bytes, max_buffered_bytes, header_timeout_s, body_timeout_s, keep_alive_s, token, token_file, max_connections, graceful_timeout, no_warm, http_impl, loop_impl, access_log, log_level):
    """Serve INDEX_DIR over HTTP: POST /search, POST /batch_search, GET /health, GET /info, /docs."""
    import logging

    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("braid serve needs the serve extra: pip install 'braid[serve]'") from None
    from braid.retrieval.serve.app import create_app
    from braid.retrieval.serve.auth import load_auth
    from braid.retrieval.serve.protocol import guarded_protocol

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(
        index_dir,
        max_concurrency=max_concurrency,
        queue_size=queue_size,
        timeout_s=timeout_s,
        max_k=max_k,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_response_bytes=max_response_bytes,
        max_buffered_bytes=max_buffered_bytes,
        body_timeout_s=body_timeout_s,
        auth=load_auth(token, token_file),
        pipelines=pipelines,
        default=default,
        warm=not no_warm,
    )
    catalog = app.state.catalog
    click.echo(
        f"braid serve: {index_dir} ({app.state.searcher.num_docs} docs); retrievers: {', '.join(catalog.retrievers)}; "
        f"pipelines: {', '.join(catalog.pipelines) or 'none'}; default: {catalog.default}",
        err=True,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=graceful_timeout,
        lifespan="on",
        http=guarded_protocol(http_impl, header_timeout_s=header_timeout_s),
        timeout_keep_alive=keep_alive_s,
        loop=loop_impl,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let running requests finish (up to
    # --graceful-timeout), then run the app's shutdown (which stops the search threads).
    server.run()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    serve_cmd()
