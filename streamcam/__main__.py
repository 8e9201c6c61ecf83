"""`python -m streamcam`: the `streamcam` command, where its script is not on PATH."""

from .cli import main

main()
