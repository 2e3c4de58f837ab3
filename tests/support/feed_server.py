"""The local feed server (it lives in ``supersede.localhub`` so the offline demo can use it)."""

from supersede.localhub.feeds import CHUNK_SIZE, FeedServer, huge_rss

__all__ = ["CHUNK_SIZE", "FeedServer", "huge_rss"]
