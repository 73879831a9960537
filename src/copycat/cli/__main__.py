"""``python -m copycat.cli``: the same as the ``copycat`` command."""

from copycat.cli.main import app

app()
