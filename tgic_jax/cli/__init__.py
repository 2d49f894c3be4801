"""The `tgic` command line: argument wiring around the library, one module per command."""
