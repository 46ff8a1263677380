"""How the command-line entry points report bad input: one line, ``error: ...``, exit 2.

``python -m jaxlab.train`` and ``python -m jaxlab.launch`` catch the errors that bad input
raises (an unknown flag or gin binding, a bad value, mesh or path) and print the
exception's message, which names the bad value and what would be valid, on one line;
``--verbose`` re-raises it with its traceback instead.
"""

from __future__ import annotations

import sys

# What a bad flag, binding, value, mesh or path raises (gin re-raises a configurable's
# ValueError with the call site appended, as the same type).
BAD_INPUT = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError)
EXIT_BAD_INPUT = 2


def one_line(error: BaseException) -> str:
    """The error's message with its lines joined (gin appends a line per call site)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return " ".join(parts) or type(error).__name__


def report(error: BaseException) -> int:
    """Prints ``error: <message>`` to stderr; returns the exit status for bad input."""
    print(f"error: {one_line(error)} (--verbose for the traceback)", file=sys.stderr)
    return EXIT_BAD_INPUT
