"""`modnet-prune serve`: serve a site from `modnet-prune web` on this machine (loopback only)."""
from __future__ import annotations

from ..deploy.web import make_server


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a `modnet-prune web` site on 127.0.0.1 "
                                     "(cross-origin isolated, so WASM threads work)")
    p.add_argument("directory", metavar="DIR", help="folder written by `modnet-prune web`")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.set_defaults(func=run)


def run(args) -> int:
    with make_server(args.directory, args.port) as server:
        print(f"serving {args.directory} at {server.url} (Ctrl-C stops)", flush=True)
        server.serve_forever()
    return 0
