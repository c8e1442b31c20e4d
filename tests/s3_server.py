"""An S3-compatible server for tests: moto's server mode on 127.0.0.1 in a thread of the test process.

Its buckets live in moto's in-process state, so ``stop()`` then ``start()`` on the same port is a server that
went away and came back with its data (a network outage, not a wiped bucket). ``die_after_puts(n, suffix)``
stops it right after it has stored the n-th object whose key ends with ``suffix`` (a PutObject, or the
completion of a multipart upload).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per request would flood the test output
        pass


class S3Server:
    def __init__(self) -> None:
        self.port = 0
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = None
        self._thread: threading.Thread | None = None
        self._die: tuple[int, str] | None = None
        self._puts = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wsgi(self, environ, start_response):
        response = self._app(environ, start_response)
        method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
        stored = (method == "PUT" and "partNumber" not in query) or (method == "POST" and "uploadId" in query)
        if self._die and stored and environ["PATH_INFO"].endswith(self._die[1]):
            self._puts += 1
            if self._puts >= self._die[0]:
                self._die = None
                threading.Thread(target=self.stop, daemon=True).start()
        return response

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket: connections are refused, as with a server that died."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def die_after_puts(self, n: int, suffix: str) -> None:
        self._die, self._puts = (n, suffix), 0

    @property
    def running(self) -> bool:
        return self._server is not None


ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A running server and the environment pointing pyarrow at it (restored afterwards)."""
    server = S3Server()
    server.start()
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=server.endpoint)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_bucket(name: str) -> None:
    """Create a bucket on the server the environment points at."""
    from pyarrow import fs as pafs

    pafs.S3FileSystem(allow_bucket_creation=True, endpoint_override=os.environ["AWS_ENDPOINT_URL"]).create_dir(name)
