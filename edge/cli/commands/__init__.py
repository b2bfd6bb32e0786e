"""Implementations of the ``edge`` subcommands; each module has ``add_arguments`` and ``run``."""


class CliError(Exception):
    """An error to report as one line (exit code 1, or 2 for usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
