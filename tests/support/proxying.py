"""What the tests' HTTP proxies in front of a peer share: relaying a request, a canned answer, serving."""

from __future__ import annotations

import http.client
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Headers about one hop: not passed on.
HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length")


def relay(handler: BaseHTTPRequestHandler, upstream: http.client.HTTPConnection, body: object) -> None:
    """Send ``handler``'s request with ``body`` (bytes, an iterable or None) upstream; relay its answer."""
    try:
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP[:3]}
        upstream.request(handler.command, handler.path, body=body, headers=headers)  # type: ignore[arg-type]
        answer = upstream.getresponse()
        data = answer.read()
        handler.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    finally:
        upstream.close()


def injected_failure(handler: BaseHTTPRequestHandler) -> None:
    """Answer 500 "injected" and close the connection."""
    handler.send_response(500)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", "8")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(b"injected")
    handler.close_connection = True


def serve(handler: type[BaseHTTPRequestHandler], name: str, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    """A threading server of ``handler`` on a free loopback port (TLS with ``tls``), serving from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
