"""The `streamcam` command line. Commands only turn flags into calls; the work happens in the library."""

from __future__ import annotations

import sys

import typer

from .errors import StreamcamError

app = typer.Typer(
    name="streamcam",
    help="See where a vision model looks: Grad-CAM heatmaps over camera, video and stream frames.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _commands() -> None:
    """Keeps `streamcam COMMAND` a command group even while it has a single command."""


@app.command()
def models() -> None:
    """List the torchvision classification models that --model accepts."""
    import torchvision

    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        typer.echo(name)


def main() -> None:
    """Entry point: user errors become one red line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except StreamcamError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
