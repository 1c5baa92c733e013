"""The exceptions fathom raises beyond Python's own."""


class SnapshotError(OSError):
    """A snapshot or layered folder that cannot be read: missing,
    unreadable, corrupt, of an unknown format version, or not a regular
    file."""


class UnknownItemError(KeyError, ValueError):
    """An id the index does not hold, where the call needs it (a seed of a
    recommendation, an item to get). A ``KeyError`` as for a mapping, and a
    ``ValueError`` as for any other bad argument."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message is already a sentence.
        return str(self.args[0]) if self.args else ""


class ServerError(RuntimeError):
    """A server's answer that no builtin exception names (``INTERNAL``,
    ``RESOURCE_EXHAUSTED``, ...). ``code`` is the gRPC status code's name."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
