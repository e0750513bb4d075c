"""The one error type for a user's mistake (config, data, adapter, model folder).

The CLI prints a `ConfigError` as one line `lofit: error: …` and exits 2. It lives in this
dependency-free module so that every layer (backbone, data, training, methods) can raise it
without importing another layer.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration mistake; the CLI prints it as one line."""


def require(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)
