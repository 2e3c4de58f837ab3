"""The local-server lifecycle base (it lives with the demo's servers in ``supersede.localhub``)."""

from supersede.localhub.server import LocalServer

__all__ = ["LocalServer"]
