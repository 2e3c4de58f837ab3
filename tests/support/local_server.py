"""The local-server lifecycle base (in ``supersede.demo.localhub``, with the demo servers)."""

from supersede.demo.localhub.server import LocalServer

__all__ = ["LocalServer"]
