"""Why a run stopped, in one line: the errors that train.py prints without a traceback.

A run that cannot go on for a reason the user can act on (a config value, a busy workdir,
a non-finite loss, a checkpoint that failed to write) raises a `RunError`; train.py prints
`train.py: error: <message>` and exits with its `exit_code`. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class RunError(Exception):
    """A run cannot go on; the message says why and what is kept, in one line."""

    exit_code = 1


class ConfigError(RunError, ValueError):
    """A config value (or a rerun's change of one) the run refuses before writing anything."""


class Interrupted(RunError):
    """SIGINT: the run saved its step and stopped (exit status 130, as a shell's Ctrl-C)."""

    exit_code = 130
