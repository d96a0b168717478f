"""The code of ``python:``, ``polars:`` and ``sql:`` transforms, compiled one way for validation and the run.

Validation compiles with these same functions, so a transform that validates also compiles on the
consumers, and a syntax error is reported when the config is loaded -- with its YAML line -- rather
than as a failed job after the source was opened. This module imports nothing heavy: polars is
imported only to check an ``sql:`` query.
"""

from __future__ import annotations

import re
import textwrap
import types

#: polars' SQL errors that come from parsing the text, so no batch can make the query valid
_SQL_PARSE_ERRORS = ("sql parser error", "one (and only one) statement")


def compile_python(label: str, code: str) -> types.CodeType:
    """bizon's per-record code as the consumers run it: dedented, compiled as a module.

    Raises SyntaxError (``lineno`` counts lines of ``code``: dedenting keeps them) or ValueError
    (a NUL character in the code).
    """
    return compile(textwrap.dedent(code), f"<transform {label}>", "exec")


def compile_polars(label: str, code: str) -> types.CodeType:
    """A ``polars:`` expression as the run evaluates it (``eval`` of text drops leading blanks too)."""
    return compile(code.lstrip(" \t"), f"<transform {label}>", "eval")


def sql_syntax_error(query: str) -> tuple[str, int | None] | None:
    """(polars' parse error, its 1-based line in ``query`` if it says) when ``query`` cannot parse, else None.

    Only errors of the parser are returned: one about columns or functions depends on the batch,
    which validation does not have, so the run reports it.
    """
    import polars as pl

    try:
        pl.SQLContext(batch=pl.LazyFrame()).execute(query, eager=False)
    except pl.exceptions.SQLInterfaceError as exc:
        text = str(exc)
        if text.startswith(_SQL_PARSE_ERRORS):
            found = re.search(r"\bLine: (\d+)", text)
            return text.removeprefix("sql parser error: "), int(found.group(1)) if found else None
    except Exception:  # noqa: BLE001 - anything else needs the data: the run decides
        return None
    return None
