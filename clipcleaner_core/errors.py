"""User-facing errors.

Every error raised at a public boundary says what was wrong (the file, row or value) and how to fix
it, in one paragraph, so the CLI can print it as-is and the app can show it in an error box.
"""


class CLIPCleanerError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""


class DataError(CLIPCleanerError, ValueError):
    """The dataset, a manifest row, a label or an input array is unusable."""


class WeightsUnavailableError(CLIPCleanerError, RuntimeError):
    """Model weights cannot be found locally and the user did not ask for a download."""


class Cancelled(CLIPCleanerError):
    """Long work stopped because the caller's ``cancel`` callback returned True."""
