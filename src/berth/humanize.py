"""Durations in words, as Docker prints them ("Up 3 minutes", "Exited (0) 2 hours ago").

Rules: the text of Go's ``units.HumanDuration`` (docker/go-units), which both the engine (the
``Status`` of ``/containers/json``) and the command line (``CREATED``) show; stdlib only and no
imports, so any layer may use it, the CLI's fast start path included.
"""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"
