"""One exception type for every user-facing failure.

The CLI prints ``str(error)`` on one line and exits non-zero; library users catch it like any error.
"""


class BlazefaceError(Exception):
    """A problem with the user's input (file, checkpoint, argument) described in one line."""
