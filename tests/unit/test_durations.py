from datetime import timedelta

import pytest

from stepstone.authoring.durations import InvalidDurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (1500, 1500),
        (2.9, 2),
        ("1500", 1500),
        ("10 seconds", 10_000),
        ("1 second", 1_000),
        ("1 minute", 60_000),
        ("26 hours", 26 * 3_600_000),
        ("2 days", 2 * 86_400_000),
        ("1 week", 7 * 86_400_000),
        ("1 month", 30 * 86_400_000),
        ("1 year", int(365.25 * 86_400_000)),
        ("250 ms", 250),
        ("3 milliseconds", 3),
        ("1.5 seconds", 1_500),
        ("  5   Minutes ", 300_000),
        (timedelta(seconds=3, milliseconds=7), 3_007),
    ],
)
def test_parses_every_documented_form(value: object, ms: int) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize(
    "value",
    ["", "ten seconds", "10 fortnights", "10", "-5 seconds", -1, True, None, [], "5 s e c"],
)
def test_rejects_what_it_cannot_read(value: object) -> None:
    if value == "10":
        assert parse_duration(value) == 10
        return
    with pytest.raises(InvalidDurationError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (850, "850 ms"),
        (12_500, "12.5 s"),
        (184_000, "3 min 4 s"),
        (5 * 3_600_000 + 120_000, "5 h 2 min"),
        (73 * 3_600_000, "3 d 1 h"),
    ],
)
def test_formats_durations_for_people(ms: int, text: str) -> None:
    assert format_duration(ms) == text
