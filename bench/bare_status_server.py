"""A bare twisted.web server answering ``GET .../status`` like the daemon: the benchmark's baseline.

It is what the daemon's status polling is compared against in
``bench_status_polling.py``: the least a twisted.web server on the same
machine can do for the same answer.  One plain ``Resource`` leaf, a default
``Site`` (no logging set up, nothing removed), served over TLS with the
daemon's own certificate and TLS settings (the context factory comes from
``imgfac_twisted.web.tls.server_context_factory``, the function the daemon
uses), in a process of its own.

Every request is answered with the document the daemon gives for a running
target image, built per request with ``json.dumps`` as the daemon does::

    {"status": "BUILDING", "_type": "target_image_status",
     "href": "https://<Host header>/<request path>", "id": "<segment before /status>"}

with ``Content-Type: application/json``.  Paths not ending in ``/status``
get a JSON 404.

By default the Site keeps twisted.web's per-request access line (without a
log file it goes to ``twisted.python.log``, here into the logging system's
start-up buffer, since nothing starts logging); the daemon drops that line
unless its ``access_log`` option is set.  ``--no-access-log`` drops it here
too, for the stricter comparison.

Usage: ``python bench/bare_status_server.py --pem PEM --port PORT [--address 127.0.0.1]``
(``--no-tls`` serves plain HTTP instead; ``--no-access-log`` as above).
It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site


class BareStatus(Resource):
    """A leaf answering every GET with a target image status document."""

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        """The status document for the request's path, as the daemon shapes it."""
        request.setHeader(b"content-type", b"application/json")
        segments = request.postpath
        if len(segments) < 2 or segments[-1] != b"status":
            request.setResponseCode(404)
            return json.dumps({"_type": "error", "code": 404, "message": "no resource"}).encode("utf-8")
        host = request.getHeader(b"host")
        if host is None:
            address = request.getHost()
            host = f"{address.host}:{address.port}".encode("ascii")
        base = ("https://" if request.isSecure() else "http://") + host.decode("ascii", "replace")
        document = {
            "status": "BUILDING",
            "_type": "target_image_status",
            "href": base + request.path.decode("utf-8", "replace"),
            "id": segments[-2].decode("utf-8", "replace"),
        }
        request.setResponseCode(200)
        return json.dumps(document).encode("utf-8")


def main(argv: list[str]) -> None:
    """Parse the command line, listen, run the reactor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pem", help="PEM file with key and certificate (the daemon's generated one)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--no-tls", action="store_true", help="serve plain HTTP")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="drop the Site's per-request access line, as the daemon does by default",
    )
    args = parser.parse_args(argv)

    site = Site(BareStatus())
    if args.no_access_log:
        site.log = lambda request: None
    if args.no_tls:
        reactor.listenTCP(args.port, site, interface=args.address)
    else:
        if not args.pem:
            parser.error("--pem is required unless --no-tls is given")
        # The daemon's own TLS context (same certificate, protocol floor and
        # ciphers), so the comparison is of the HTTP stacks, not of TLS setups.
        from imgfac_twisted.web.tls import server_context_factory

        reactor.listenSSL(args.port, site, server_context_factory(args.pem), interface=args.address)
    print(f"bare status server on {'http' if args.no_tls else 'https'}://{args.address}:{args.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
