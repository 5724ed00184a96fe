"""Errors with a one-line, user-facing message.

``MediaflowError`` subclasses are expected failures (bad input, a service down):
entry points print ``str(error)`` and exit non-zero instead of a traceback.
``permanent`` tells the operator whether retrying can help.
"""


class MediaflowError(Exception):
    permanent = True
    reason = "Failed"


class InvalidSourceError(MediaflowError):
    reason = "InvalidSource"


class InvalidMediaError(MediaflowError):
    reason = "InvalidMedia"


class NoAudioStreamError(InvalidMediaError):
    reason = "NoAudioStream"


class MediaTooLargeError(InvalidMediaError):
    reason = "MediaTooLarge"


class EngineUnavailableError(MediaflowError):
    """A model service could not be reached or answered 5xx: worth retrying."""

    permanent = False
    reason = "EngineUnavailable"


class EngineRequestError(MediaflowError):
    """A model service rejected the request (4xx): retrying will not help."""

    reason = "EngineRejected"


class NotFoundError(MediaflowError):
    reason = "NotFound"


class ArtifactStoreFullError(MediaflowError):
    """The artifact store ran out of space (ENOSPC/EDQUOT): retry once space is freed."""

    permanent = False
    reason = "StorageFull"


class UnsupportedLanguageError(MediaflowError, ValueError):
    """A language code Whisper does not know, or one the model cannot transcribe (an
    English-only model asked for French): a client error, never retried."""

    reason = "UnsupportedLanguage"
