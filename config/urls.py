"""URLs that may carry a password (the store's, the broker's): usable as the URL, shown masked."""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

#: ``scheme://user:PASSWORD@`` (each URL of a ``;``-separated failover list too) and a
#: ``password=`` query parameter. A password in a URL is percent-encoded, so it holds no ``/``,
#: ``@`` or ``;``: a port followed by a path (``host:6379/0``) is never taken for one.
_PASSWORD = re.compile(r"(?P<before>://[^/@:;]*:)[^/@;]+(?P<after>@)")
_QUERY_PASSWORD = re.compile(r"(?P<before>[?&]password=)[^&;]+", re.IGNORECASE)
MASK = "***"


def mask_password(url: str) -> str:
    """``url`` with every password in it replaced by ``***`` (unchanged when it has none)."""
    url = _PASSWORD.sub(rf"\g<before>{MASK}\g<after>", url)
    return _QUERY_PASSWORD.sub(rf"\g<before>{MASK}", url)


class SecretUrl(str):
    """A URL whose password never shows: ``repr()`` and ``str()`` (so logs, f-strings, a printed
    settings object, Celery's and Flower's view of the configuration) give it with the password
    as ``***``. Libraries that parse the characters (SQLAlchemy, kombu, redis-py) get the URL in
    full; :meth:`get_secret_value` returns it as a plain string for anything else."""

    __slots__ = ()

    def get_secret_value(self) -> str:
        """The URL in full, password included, as a plain ``str``."""
        return str.__str__(self)

    @property
    def masked(self) -> str:
        """The URL with its password (if any) replaced by ``***``."""
        return mask_password(self.get_secret_value())

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return repr(self.masked)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str.__str__, when_used="json"
            ),
        )


def reveal(url: str | None) -> str | None:
    """A URL in full as a plain ``str`` (a :class:`SecretUrl` included), None as None."""
    return None if url is None else str.__str__(url)
