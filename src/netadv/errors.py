"""Errors a user can cause, each with a message that says what to do."""

from __future__ import annotations


class NoAdversarialError(ValueError):
    """The activation's derivative vanishes or changes sign, so ``A_f' = 1/f'`` does not exist."""


class ConfigError(ValueError):
    """A bad option, configuration or combination of options."""
