"""The local feed server (it lives in ``supersede.demo.localhub``; the demo uses it too)."""

from supersede.demo.localhub.feeds import CHUNK_SIZE, FeedServer, huge_rss

__all__ = ["CHUNK_SIZE", "FeedServer", "huge_rss"]
