"""The local Hub server (it lives in ``supersede.demo.localhub`` so the offline demo can use it)."""

from supersede.demo.localhub.hub import LFS_SIZE_THRESHOLD, LFS_SUFFIXES, HubServer

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "HubServer"]
