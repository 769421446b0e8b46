"""Turning requests into builders and running them: the dispatcher and its helpers."""
