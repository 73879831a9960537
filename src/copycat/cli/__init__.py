"""The ``copycat`` command line (``copycat.cli.main:app``): each command parses, calls, prints."""
