"""The one exception type for problems a user can fix.

Every check of user input — a file, a field, a line, a flag, an array's shape, dtype or
values — raises :class:`InputError` with a one-line message naming what is wrong and where.
The CLI turns exactly these (and missing/unreadable files) into one line on stderr and exit
code 2; anything else is a bug and surfaces as a traceback.

It subclasses :class:`ValueError`, so library callers that catch ``ValueError`` keep working.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message is one line and names the file, field, line or shape."""
