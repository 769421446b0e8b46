"""Helpers shared by the tests; no test lives here.

``tests`` is on ``sys.path`` (pyproject's ``pythonpath``), so test modules and
conftest files import these as ``from support.daemon import Daemon``.  Test
modules never import each other: what two of them share belongs here or in a
``conftest.py``.
"""
