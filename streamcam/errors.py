"""Errors that streamcam reports to users as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class StreamcamError(ValueError):
    """A problem with what the user asked for: a name, a file, a shape. The message is the whole story."""


class WeightsUnavailableError(StreamcamError):
    """Pretrained weights could not be fetched (offline, firewall, ...)."""


def unknown_name(kind: str, name: object, valid: Iterable[str], hint: str = "") -> StreamcamError:
    """An error for a name that is not among `valid`, naming the closest matches, or all when few."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    if close:
        suggestion = f"did you mean {', '.join(close)}?"
    elif len(valid) <= 30:
        suggestion = f"valid: {', '.join(valid)}"
    else:
        suggestion = f"{len(valid)} are valid, e.g. {', '.join(valid[:8])}, ..."
    return StreamcamError(f"unknown {kind} {name!r}; {suggestion}{' ' + hint if hint else ''}")
