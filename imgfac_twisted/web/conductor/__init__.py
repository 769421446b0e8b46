"""The Conductor image API: XML, HTTP Basic auth, provider accounts and multi-push, at ``/conductor/api/``.

``app`` holds the Klein routes, ``representations`` the XML documents,
``errors`` the one place where errors become ``<error>`` answers, and
``resource`` the resource that checks size, credentials and Accept before
routing, and the site root that sends ``/conductor/...`` to it.
"""
