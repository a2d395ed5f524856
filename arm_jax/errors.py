"""Every exception type of arm-jax, in one place.

Problems a user can fix — a file, a field, a line, a flag, an array's shape, dtype or values —
raise :class:`InputError` (or a subclass) with a one-line message naming what is wrong and where.
The CLI turns exactly these (and missing/unreadable files) into one line on stderr and exit
code 2; anything else is a bug and surfaces as a traceback.

:class:`InputError` subclasses :class:`ValueError`, so library callers that catch ``ValueError``
keep working.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message is one line and names the file, field, line or shape."""


class UsageError(InputError):
    """A problem with the user's command line; printed as one line, exit code 2."""


class DataFileError(InputError):
    """A data file exists but is unusable (shape, dtype, non-finite values, mismatch)."""


class MissingDataFileError(FileNotFoundError, InputError):
    """A data file does not exist. Both a ``FileNotFoundError`` and a ``ValueError``."""


class SelectionFailed(RuntimeError):
    """A kernel could not produce finite scores from finite inputs (a bug or an extreme
    input the ridge retries could not rescue); raised instead of returning unranked picks."""


class RunFailed(RuntimeError):
    """A round picked a pair that was not a valid, scored candidate (a kernel failed, fewer
    unlabelled candidates than k were left, or the label buffer overflowed): the run's
    numbers would be wrong, so they are not returned."""
