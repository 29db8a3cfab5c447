"""One module per ``stylerig`` command; each registers itself on :data:`stylerig_cli.app.app`."""
