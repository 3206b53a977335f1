"""Subcommands of the ``phai`` command, one module each (see :data:`phai.cli.COMMANDS`)."""
