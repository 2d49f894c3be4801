"""`python -m tgic_jax.cli`: the `tgic` command."""

from tgic_jax.cli.main import entry

entry()
