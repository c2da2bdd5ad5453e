"""The one exception type of the analysis package.

Every malformed input (missing column, empty group, non-positive value in a log fit, unreadable store)
raises `AnalysisError` with a message that names the column, group or file. It subclasses ValueError so
callers that already catch ValueError keep working; the CLI prints it as one line and exits with 2.
An input that a fitter survives but that is suspect (rows that look like several groups pooled into one
fit, groups left empty after dropping NaN rows, curves of runs missing from the runs table) gives an
`AnalysisWarning` naming the group or column; the CLI lists them with the recipe's warnings.
"""


class AnalysisError(ValueError):
    """Invalid input to an analysis function; the message names the column, group or file."""


class LoadWarning(UserWarning):
    """A store problem that loading survives (corrupt metrics line, unreadable status); names the file."""


class AnalysisWarning(UserWarning):
    """A suspect input that a fitter survives (pooled groups, empty or NaN groups dropped); names the group."""
