"""The `tgic` command line: argument wiring around the library, one module per command."""

from tgic_jax.cli.main import entry

__all__ = ["entry"]
