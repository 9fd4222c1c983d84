"""``instacli serve``: a trained run behind an HTTP API (the app: :func:`instacli.serve.create_app`)."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from instacli.cli.common import console
from instacli.errors import InstacliError, os_error_text
from instacli.settings import ServeLimits

app = typer.Typer()
DEFAULTS = ServeLimits()


def url(host: str, port: int) -> str:
    """The address to open: an IPv6 host goes in brackets (``http://[::1]:8000``), as URLs require."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@app.command("serve")
def serve_command(
    run: Path = typer.Argument(..., help="Run folder written by `instacli train`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every network interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free one)."),
    max_file_mb: float = typer.Option(DEFAULTS.max_file_mb, help="Largest photo accepted, in megabytes."),
    max_files: int = typer.Option(DEFAULTS.max_files, help="Most photos in one request."),
    max_batch: int = typer.Option(DEFAULTS.max_batch, help="Most photos per forward pass, gathered from concurrent requests."),
    max_wait_ms: float = typer.Option(DEFAULTS.max_wait_ms, help="How long a photo waits for others to share its forward pass."),
) -> None:
    """Answer POST /predict (photos as multipart files, engagement as form fields) with `predict`'s rows; docs at /docs."""
    limits = ServeLimits.from_flags(max_file_mb=max_file_mb, max_files=max_files, max_batch=max_batch, max_wait_ms=max_wait_ms)
    try:
        import uvicorn

        from instacli.serve import create_app
    except ImportError as exc:
        raise InstacliError(f"serve needs the serve extra ({exc.name} is missing); install it with pip install 'instacli[serve]'") from None
    try:  # bound here, not by uvicorn, whose "address already in use" was a log line and exit 3
        listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        reason = os_error_text(exc).split(" (while attempting")[0]  # the address create_server adds is in the message already
        raise InstacliError(f"--host {host} --port {port}: cannot listen there ({reason}); choose another port or host") from None
    with listening:
        server_app = create_app(run, limits)
        port = listening.getsockname()[1]  # the one chosen for --port 0
        console.print(f"serving {run} on {url(host, port)} (docs: {url(host, port)}/docs); Ctrl-C stops it", soft_wrap=True)
        # Server.run, not uvicorn.run (which swallows KeyboardInterrupt): after its graceful shutdown, uvicorn raises
        # the signal again, so that Ctrl-C and SIGTERM end serve with 130 and 143 as they end every command
        uvicorn.Server(uvicorn.Config(server_app, host=host, port=port, log_level="warning")).run(sockets=[listening])
