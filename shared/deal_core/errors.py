"""One exception hierarchy for the whole library.

Every error a caller can cause is a :class:`DeALError`, so ``except DeALError`` is enough to keep an
application alive; the subclasses say *what* to fix.  None of them leaves the engine in a bad state:
the search owns no state between calls except the model, which it never mutates.
"""

from __future__ import annotations


class DeALError(Exception):
    """Base class of every error raised by DeAL."""


class ConfigError(DeALError, ValueError):
    """A search setting, prompt or argument is invalid. The message names the field and the fix."""


class ContextLengthError(ConfigError):
    """The prompt (plus ``max_new_tokens``) does not fit in the model's context window."""


class RewardError(DeALError):
    """A reward raised, or returned something that is not one finite-or-``-inf`` float per candidate."""

    def __init__(self, message: str, *, reward_name: str | None = None) -> None:
        super().__init__(message)
        self.reward_name = reward_name


class ModelLoadError(DeALError, RuntimeError):
    """A model or tokenizer could not be loaded. The message says the command that fixes it."""


class SearchTimeout(DeALError, TimeoutError):
    """A search ran past its ``timeout``."""


class SearchCancelled(DeALError):
    """A search was cancelled by its caller (e.g. an async task was cancelled or a stream closed)."""


class NoValidCandidate(DeALError):
    """Every candidate was forbidden (a hard constraint scored it ``-inf``): there is no allowed answer.

    ``rewards`` names the reward(s) that forbade the final candidates.
    """

    def __init__(self, message: str, *, rewards: list[str] | None = None) -> None:
        super().__init__(message)
        self.rewards = rewards or []


class ModelRunError(DeALError, RuntimeError):
    """The LM failed while running this request alone (requests batched with it were retried
    without it and are unaffected). The message carries the underlying error."""


class StructureError(DeALError):
    """A search with a ``response_format`` found no way to complete it within ``max_new_tokens``.

    The search never returns an incomplete or invalid structured answer as if it were valid; it raises
    this instead (raise ``max_new_tokens``, or simplify the schema or grammar).
    """


class ServerError(DeALError, RuntimeError):
    """An inference server (``base_url=...``) failed a request: it answered with an error after the
    retries, or with something that is not an OpenAI-compatible completion. The message quotes it."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url, self.status = url, status


class ServerUnavailable(ServerError, ConnectionError):
    """The server cannot be reached, or stopped answering mid-request (it died or restarted).

    Only the requests in flight fail; the engine reconnects by itself on the next call, so it works
    again as soon as the server is back.
    """


class ModelNotServed(ConfigError):
    """The server does not serve the model asked for; the message lists the models it does serve."""

    def __init__(self, message: str, *, served: list[str] | None = None) -> None:
        super().__init__(message)
        self.served = list(served or [])
