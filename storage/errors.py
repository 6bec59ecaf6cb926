"""Which database errors are worth trying again: the database (or the network to it) was unavailable."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


def is_transient(error: BaseException) -> bool:
    """True for an outage (connection refused or lost, a timeout, a locked SQLite file); False for a bug
    (a constraint, a bad statement), where trying again would fail the same way."""
    if isinstance(error, (OSError, TimeoutError, sa_exc.TimeoutError)):
        return True
    return isinstance(error, sa_exc.DBAPIError) and not isinstance(
        error, (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.DataError, sa_exc.NotSupportedError)
    )
