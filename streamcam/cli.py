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


@app.command()
def models() -> None:
    """List the torchvision classification models that --model accepts."""
    from .models import available_models

    for name in available_models():
        typer.echo(name)


@app.command()
def layers(model: str = typer.Argument(..., help="A model name, as listed by `streamcam models`.")) -> None:
    """List the layers of MODEL that can be explained (--layer), last one (the default) at the bottom."""
    from .cam.layers import feature_layers
    from .models import load_model

    loaded = load_model(model, "none", device="cpu")
    typer.echo(f"{'layer':<20} {'channels':>8} {'stride':>6}  same output as")
    for layer in feature_layers(loaded.model, max_depth=2):
        typer.echo(f"{layer.name:<20} {layer.channels:>8} {layer.stride:>6}  {', '.join(layer.aliases)}")


@app.command()
def methods() -> None:
    """List the explanation methods that --method accepts."""
    from .cam import METHODS

    for name, method in METHODS.items():
        typer.echo(f"{name:<11} {method.summary}")


def main() -> None:
    """Entry point: user errors become one red line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except StreamcamError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
