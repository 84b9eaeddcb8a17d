"""Start the local web page: restore your images from a browser, no command line needed.

The server listens on this machine only (127.0.0.1) unless --host says otherwise, prints its
address and opens it in the browser. Uploads, results and trained weights stay in the working
folder (--workdir); nothing leaves the machine. Stop it with Ctrl-C. Needs `pip install 'sei[app]'`.

examples:
  sei app                          # http://127.0.0.1:8765, files in ./sei-app
  sei app --port 9000 --workdir ~/restorations --no-browser
  sei app --device cuda            # jobs run on the GPU
  sei app --host 0.0.0.0           # reachable from other machines: only on a network you trust
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sei.errors import SeiUserError

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sei.app.server import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_UPLOAD_MB

    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("sei-app"),
        help="folder for uploads, results and trained weights (default ./sei-app)",
    )
    parser.add_argument("--device", default="cpu", help="where jobs run: cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--max_upload_mb",
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest file accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.add_argument(
        "--max_megapixels",
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help=f"largest image accepted (default {DEFAULT_MAX_MEGAPIXELS:g} megapixels)",
    )
    parser.add_argument(
        "--no-browser",
        "--no_browser",
        dest="browser",
        action="store_false",
        help="do not open the page in a browser",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import socket
    import sys
    import threading
    import webbrowser

    from sei.app import require_app_packages

    require_app_packages()
    import uvicorn

    from sei.app.server import Limits, create_app
    from sei.runtime import resolve_device

    resolve_device(args.device)
    if not 0 <= args.port <= 65535:
        raise SeiUserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise SeiUserError("--max_upload_mb and --max_megapixels must be positive")
    loopback = is_loopback(args.host)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host.strip("[]"), args.port))
        listener.listen(
            128
        )  # connections wait in the backlog while the server starts: the printed address works at once
    except OSError as error:
        raise SeiUserError(
            f"cannot listen on {args.host}:{args.port}: {error.strerror or error}; try another --port"
        ) from error
    port = listener.getsockname()[1]
    app = create_app(
        args.workdir,
        device=args.device,
        limits=Limits(args.max_upload_mb, args.max_megapixels),
        loopback=loopback,
    )
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    address = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"
    print(f"sei app: open {address} (files in {app.state.workdir}; Ctrl-C stops)", flush=True)
    if not loopback:
        print(
            f"sei app: warning: listening on {args.host}: anyone who can reach this machine can use the "
            "page and see its results",
            file=sys.stderr,
            flush=True,
        )
    if args.browser:
        threading.Timer(1.0, webbrowser.open, (address,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])
    return 0
