"""Who holds a lease: ``<host> pid <pid>`` names a process, and a dead one frees its lease.

The scheduler's lock and a job's lease both name their holder this way.
"""

from __future__ import annotations

import os
import re
import socket

import psutil

#: ``<host> pid <pid>`` (a scheduler, :func:`lock_owner`), optionally ``task <id>`` (a job).
_OWNER = re.compile(r"^(?P<host>\S+) pid (?P<pid>\d+)(?: task \S+)?$")


def lock_owner() -> str:
    """This process, as the lock table names it."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def holder_is_dead(owner: str) -> bool:
    """True only when ``owner`` (``<host> pid <pid>``, optionally followed by ``task <id>``)
    names this host and a process that is not running.

    Anything else counts as alive: another host (its processes cannot be seen from here), an
    owner string of another shape, a process this user may not signal, or a PID reused by a
    new process (the lease then expires by its heartbeat, as before). A zombie (killed, not yet
    reaped by its parent) is dead: it can never renew the lease. Hosts are told apart by name,
    so two hosts (or containers) must not share one while sharing a store.
    """
    match = _OWNER.match(owner)
    if match is None or match["host"] != socket.gethostname():
        return False
    pid = int(match["pid"])
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # access denied and the like: it exists
        return False
