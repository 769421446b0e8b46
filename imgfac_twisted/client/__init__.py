"""The parts of ``imagefactory-cli`` (``imgfac_twisted.cli``): its settings, its HTTP client of the
REST API, and what it shows on a terminal or writes to a pipe.

Synchronous (requests and rich): the command-line client is no part of the
daemon and never runs on a reactor.
"""
