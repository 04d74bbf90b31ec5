"""One base error for jobhook; each subclass says in its docstring what went wrong."""

from __future__ import annotations


class JobhookError(Exception):
    """Base of every error jobhook raises on purpose."""


class ConfigError(JobhookError):
    """A setting is wrong: names the variable and what it expects."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


class StorageError(JobhookError):
    """The database could not be read or written (locked, read-only, full, corrupt)."""


class SchemaTooNew(StorageError):
    """The database was migrated by a newer jobhook than this one."""
