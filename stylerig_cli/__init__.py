"""The ``stylerig`` command line (typer). Commands only parse arguments and call one library function."""
