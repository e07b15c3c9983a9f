from runtime.errors import KanetError


class ExportError(KanetError):
    """An export step failed because of its input or options; the message says which and why."""
