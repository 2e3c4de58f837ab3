"""The exception tree every Supersede layer raises and catches.

::

    SupersedeError                  base: always carries a message a user can act on
    ├── FatalError                  retrying will not help; record the reason and tell the user
    │   ├── ConfigError             bad config file, key or environment variable
    │   ├── TaskFileError           bad task file (unknown key, broken template, missing data)
    │   ├── ModelNotFound           no such repo, revision, file or local path
    │   ├── ModelBroken             its files cannot be read (corrupt weights, broken config)
    │   ├── ModelRefused            the model exists but is not loaded, on purpose
    │   │   ├── PickleWeightsRefused    only pickle weights (*.bin, *.pt, ...), no safetensors
    │   │   ├── RemoteCodeRefused       config asks for remote code that is not allow-listed
    │   │   ├── DownloadRefused         over the download cap, or a file the loader must not read
    │   │   └── GatedModelError         gated or private repo and the token has no access
    │   ├── DiskFull                the disk filled up while downloading a model (ENOSPC)
    │   ├── EndpointRefused         an API endpoint rejected the request (bad key, bad model, 4xx)
    │   ├── FeedInvalid             a feed answered 4xx, is too large, or is not RSS/Atom
    │   └── AlreadyRunning          another scheduler holds this store's lease
    └── RetryableError              transient: the same call may succeed later
        ├── HubUnavailable          Hub unreachable, timed out, 429 or 5xx
        ├── EndpointUnavailable     an API endpoint unreachable, timed out, 429 or 5xx
        ├── FeedUnavailable         a feed unreachable, stalled, 429 or 5xx
        └── BrokerUnavailable       the job queue's broker (Redis) cannot be reached

Task runners retry only ``RetryableError``. Everything else is recorded with its message and shown
as is: messages name the file, key or model and say what to do, so no traceback is needed.
"""

from __future__ import annotations


class SupersedeError(Exception):
    """Base of every error Supersede raises on purpose."""


class FatalError(SupersedeError):
    """An error that retrying cannot fix."""


class RetryableError(SupersedeError):
    """A transient error: the same call may succeed later.

    ``retry_after_s`` is the wait the other side asked for (Retry-After, RateLimit reset), if any.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(FatalError):
    """The configuration (YAML file or environment) is invalid."""


class TaskFileError(FatalError):
    """A task file is invalid: unknown key, broken template, missing or unreadable data."""


class ModelNotFound(FatalError):
    """The model, adapter, revision or local path does not exist."""


class ModelBroken(FatalError):
    """The model's files exist but cannot be read: a corrupt safetensors header, a broken
    config or tokenizer. The pinned commit will not change, so retrying cannot help."""


class ModelRefused(FatalError):
    """The model exists but is refused by the loading policy."""


class PickleWeightsRefused(ModelRefused):
    """Only pickle-based weights are published; pickle can execute code when loaded."""


class RemoteCodeRefused(ModelRefused):
    """The model needs ``trust_remote_code`` and its repo is not allow-listed."""


class GatedModelError(ModelRefused):
    """The repo is gated or private and the configured token has no access."""


class DownloadRefused(ModelRefused):
    """The repo's files are refused before download: larger than the cap its parameter count
    and ``hub.max_download_gib`` allow, or laid out so a loader would read a file it must not
    (a weight path outside the repo, a decoy weight beside pickle weights)."""


class DiskFull(FatalError):
    """The disk holding the download cache is full (``ENOSPC``): retrying fills it again."""


class HubUnavailable(RetryableError):
    """The Hub (or the configured endpoint) is unreachable, rate-limiting or failing."""


class HubUnreachable(HubUnavailable):
    """No connection to the Hub could be made at all (no route, name not resolved, refused):
    asking it again in the same pass would fail the same way."""


class EndpointRefused(FatalError):
    """An API endpoint rejected the request and retrying cannot help (400, 401, 403, 404)."""


class EndpointUnavailable(RetryableError):
    """An API endpoint is unreachable, timing out, rate-limiting or failing (after retries)."""


class FeedInvalid(FatalError):
    """A feed answered 4xx, is larger than the cap, or is not a readable RSS/Atom document."""


class FeedUnavailable(RetryableError):
    """A feed is unreachable, timed out, stalled mid-body, or answered 429 or 5xx."""


class AlreadyRunning(FatalError):
    """Another scheduler holds the store's lease (one active scheduler per store)."""


class BrokerUnavailable(RetryableError):
    """The job queue's broker (Redis, or the embedded queue's database) cannot be reached."""
