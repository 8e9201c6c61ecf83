"""Errors that streamcam reports to users as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class StreamcamError(ValueError):
    """A problem with what the user asked for: a name, a file, a shape. The message is the whole story."""


class WeightsUnavailableError(StreamcamError):
    """Pretrained weights could not be fetched (offline, firewall, ...)."""


def unknown_name(kind: str, name: object, valid: Iterable[str], hint: str = "") -> StreamcamError:
    """An error for a name that is not among `valid`: the closest matches, and the valid names when
    they are few enough to read (else a few, and `hint` on where to find them all)."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    parts = [f"did you mean {', '.join(close)}?"] if close else []
    if len(valid) <= 30:
        parts.append(f"valid: {', '.join(valid)}")
    elif not close:
        parts.append(f"{len(valid)} are valid, e.g. {', '.join(valid[:8])}, ...")
    if hint:
        parts.append(hint)
    return StreamcamError(f"unknown {kind} {name!r}; {' '.join(parts)}")


class RunFailed(StreamcamError):
    """A run that started could not finish (a lost stream, a full disk). The outputs hold, playable,
    what was done; `result` (set by api.run) says how far it got."""

    result: object = None
