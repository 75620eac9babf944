"""optuna-dashboard on a study's storage, live: `bench search --dashboard` and `bench dashboard`.

It is served from threads of this process (a threading WSGI server from the standard library around
`optuna_dashboard.wsgi`), bound to 127.0.0.1 only: the dashboard can change a study (notes, trial states), so it is
never opened to the network; a user on another machine forwards the port (`ssh -L`). Leaving `serving` stops the
server, joins its threads and closes its socket and database connections: nothing of it outlives the command.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bench.plan.errors import UserError
from bench.run.locations import rdb_storage

HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # optuna-dashboard's own


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request (the page asks for several things at once); `server_close` joins them."""

    daemon_threads = False
    block_on_close = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: the command's own lines stay readable."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the name is the base class's
        pass


@contextlib.contextmanager
def serving(storage_uri: str, port: int) -> Iterator[str]:
    """Serve optuna-dashboard on the Optuna RDB storage `storage_uri` at 127.0.0.1:`port` (0: a free port) while
    the block runs; yields the page's address. A port that cannot be had is one UserError line."""
    import optuna_dashboard

    storage = rdb_storage(storage_uri)
    try:
        server = make_server(HOST, port, optuna_dashboard.wsgi(storage), server_class=_Server,
                             handler_class=_QuietHandler)
    except OSError as exc:
        storage.engine.dispose()
        raise UserError(f"cannot serve the dashboard on {HOST}:{port} ({exc.strerror}); give another port, or 0 "
                        "for a free one") from None
    thread = threading.Thread(target=server.serve_forever, name="optuna-dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}/dashboard"
    finally:
        server.shutdown()  # serve_forever returns
        thread.join()
        server.server_close()  # the socket, and every request thread joined
        storage.engine.dispose()
