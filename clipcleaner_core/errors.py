"""User-facing errors: one hierarchy, so a caller catches :class:`CLIPCleanerError` and is done.

Every error raised at a public boundary says what was wrong (the file, row or value) and how to fix
it, in one paragraph, so the CLI can print it as-is (one line, exit status 2) and the app can show
it in an error box.

    CLIPCleanerError                 anything the user can cause and fix
    ├── ConfigError (+ ValueError)   a bad option, threshold, mode or name
    ├── DataError (+ ValueError)     the dataset, a manifest row, a label or an input array is unusable
    │   └── DatasetMismatchError     a score table / recipe / selection no longer matches its dataset
    ├── WeightsUnavailableError (+ RuntimeError)   weights not found locally / network unreachable
    └── Cancelled                    the caller's ``cancel`` callback asked to stop

ConfigError and DataError are also ValueErrors, so code written against the standard library's
convention (``except ValueError``) keeps working.
"""


class CLIPCleanerError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""


class ConfigError(CLIPCleanerError, ValueError):
    """An option, threshold, mode or name is invalid (the message names the valid values)."""


class DataError(CLIPCleanerError, ValueError):
    """The dataset, a manifest row, a label or an input array is unusable."""


class DatasetMismatchError(DataError):
    """A score table, recipe or selection was made on a different version of its dataset."""


class WeightsUnavailableError(CLIPCleanerError, RuntimeError):
    """Model weights cannot be found locally and the user did not ask for a download, or the
    download cannot reach the network."""


class Cancelled(CLIPCleanerError):
    """Long work stopped because the caller's ``cancel`` callback returned True."""
