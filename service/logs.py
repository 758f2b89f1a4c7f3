"""Log records that a request cannot forge: control characters in messages are escaped.

A URL path, header or model name reaches log messages decoded (``/%0a`` is a
newline in ``request.path``), so each message is written with its control
characters as ``\\xNN`` escapes: one record is always one line. Traceback lines
(which are many by nature) are indented, so no line of one starts like a record.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1, line/paragraph separators) escaped."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else
                        f"\\u{ord(m[0]):04x}", text)  # fmt: skip


class SafeFormatter(logging.Formatter):
    """A Formatter whose every record is one line, whatever the logged values hold."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: ANN001, N802 - logging's signature
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


def handler(fmt: str) -> logging.Handler:
    """A stderr handler with the safe formatter, for ``logging.basicConfig(handlers=...)``."""
    out = logging.StreamHandler()
    out.setFormatter(SafeFormatter(fmt))
    return out
