"""The one exception type of the analysis package.

Every malformed input (missing column, empty group, non-positive value in a log fit, unreadable store)
raises `AnalysisError` with a message that names the column, group or file. It subclasses ValueError so
callers that already catch ValueError keep working; the CLI prints it as one line and exits with 2.
"""


class AnalysisError(ValueError):
    """Invalid input to an analysis function; the message names the column, group or file."""


class LoadWarning(UserWarning):
    """A store problem that loading survives (corrupt metrics line, unreadable status); names the file."""
