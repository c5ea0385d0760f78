"""The one exception hierarchy of semcache.

Every error raised on purpose by semcache, gpu_embed or the proxy derives from
:class:`SemcacheError`, so a caller can catch one root and the proxy can map
each class to one OpenAI-shaped response in a single handler::

    SemcacheError
    +-- ConfigError                 a setting or policy is invalid
    |   +-- PolicyError             a policy file failed to load or validate
    +-- RequestError                the caller's request cannot be handled (4xx)
    +-- CacheUnavailableError       a cache component failed; callers degrade
    |   +-- StoreError              the document store failed (SQLite, Redis)
    |   +-- VectorIndexError        the in-memory vector index failed
    |   +-- EmbedderError           the embedder failed
    |       +-- EmbedderOverloadedError   the embedding queue is full
    +-- UpstreamError               an upstream engine failed or answered an error

``CacheUnavailableError`` and its subclasses mean "serve the request without
the cache": the proxy forwards uncached (``X-Semcache-Status: bypass``) and
never fails the user's request because of them.
"""

from __future__ import annotations


class SemcacheError(Exception):
    """Root of all semcache errors."""


class ConfigError(SemcacheError):
    """A setting or policy is invalid."""


class PolicyError(ConfigError):
    """A policy file failed to load or validate.

    The message names the file, the path to the offending field and what is
    wrong, e.g. ``policies/code.yaml: categories.code.threshold: Input should
    be less than or equal to 1``.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class RequestError(SemcacheError):
    """The caller's request is malformed or not acceptable (maps to HTTP 4xx)."""

    def __init__(self, message: str, *, param: str | None = None, status_code: int = 400):
        self.message = message
        self.param = param
        self.status_code = status_code
        super().__init__(message)


class CacheUnavailableError(SemcacheError):
    """A cache component failed; the request must be served without the cache."""


class StoreError(CacheUnavailableError):
    """The document store (SQLite, Redis) failed or is unreachable."""


class VectorIndexError(CacheUnavailableError):
    """The in-memory vector index failed."""


class EmbedderError(CacheUnavailableError):
    """The embedder failed to produce vectors."""


class EmbedderOverloadedError(EmbedderError):
    """The embedder's queue is full; the caller should go uncached, not wait."""


class UpstreamError(SemcacheError):
    """An upstream engine failed or answered with an error status."""

    def __init__(self, message: str, *, status_code: int = 502, body: object = None):
        self.status_code = status_code
        self.body = body
        super().__init__(message)
