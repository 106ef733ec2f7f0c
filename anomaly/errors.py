"""User-facing errors.

Anything a user can cause (bad config, bad data, missing files) raises `AnomalyError` with a
message that stands on its own in one line; the CLI prints it without a traceback.
"""


class AnomalyError(Exception):
    """An error caused by input the user controls, with a self-contained one-line message."""
