"""The ``edge`` command line: the shell (``main``) and one module per subcommand (``commands``)."""
