"""berth.humanize: Docker's units.HumanDuration, shared by the engine's Status and the CLI."""

from __future__ import annotations

import pytest

from berth.humanize import human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "Less than a second"),
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (150, "2 minutes"),
        (300, "5 minutes"),
        (3600, "About an hour"),
        (3 * 3600, "3 hours"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
        (3 * 365 * 86400, "3 years"),
    ],
)
def test_human_duration_is_dockers(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
