"""``python -m chatkeep.fakellm``: the fake backend without the rest of the command line."""

import typer

from chatkeep.fakellm.cli import register

app = typer.Typer(add_completion=False)
register(app)
app()
