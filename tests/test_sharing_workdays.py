"""Working-day deadlines (issue 4 §3) on the Chinese calendar: holidays, 调休, reminders.

Every expected date below was worked out by hand from the State Council holiday notices
and checked against chinese_calendar's data (see the day-by-day tables in comments).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import chinese_calendar
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datatong.errors import AppError
from datatong.settings import Settings, get_settings
from datatong.sharing import calendar, workdays
from datatong.sharing.workdays import (
    FIRST_YEAR,
    LAST_YEAR,
    CalendarUnknownYear,
    add_working_days,
    deadline_days,
    due_date,
    is_overdue,
    is_working_day,
    reminder_due,
    working_days_between,
)

D = date


@pytest.fixture
def conf(tmp_path: Path) -> Settings:
    return Settings(database_url="sqlite://", var_dir=tmp_path, secret_key="k")


# --- the calendar itself ----------------------------------------------------------------


# 国庆 2025: 10-01 (Wed) .. 10-08 (Wed) off; make-up working days 09-28 (Sun), 10-11 (Sat).
# 春节 2025: 01-28 .. 02-04 off; make-up 01-26 (Sun), 02-08 (Sat).
# 春节 2026: 02-15 .. 02-23 off; make-up 02-14 (Sat), 02-28 (Sat).
# 中秋+国庆 2026: 09-25..27 and 10-01..07 off; make-up 09-20 (Sun), 10-10 (Sat).
@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2025, 9, 26), True),  # Friday
        (D(2025, 9, 27), False),  # Saturday
        (D(2025, 9, 28), True),  # Sunday, 调休 make-up day
        (D(2025, 10, 1), False),  # 国庆
        (D(2025, 10, 8), False),  # Wednesday, still 国庆/中秋
        (D(2025, 10, 9), True),
        (D(2025, 10, 11), True),  # Saturday, 调休
        (D(2025, 10, 12), False),
        (D(2025, 1, 26), True),  # Sunday, 调休 before 春节
        (D(2025, 2, 3), False),  # Monday in 春节
        (D(2025, 2, 8), True),  # Saturday, 调休
        (D(2026, 2, 14), True),  # Saturday, 调休
        (D(2026, 2, 23), False),  # Monday, last day of 春节 2026
        (D(2026, 9, 25), False),  # Friday, 中秋 2026
        (D(2026, 10, 10), True),  # Saturday, 调休
    ],
)
def test_is_working_day_follows_the_holiday_notices(day: date, working: bool) -> None:
    assert is_working_day(day) is working
    assert chinese_calendar.is_workday(day) is working
    assert is_working_day(datetime.combine(day, datetime.min.time())) is working


# --- adding working days ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # The day of submission does not count: Thursday + 1 = Friday.
        (D(2025, 9, 25), 1, D(2025, 9, 26)),
        # Friday + 1 across a weekend whose Sunday is a make-up working day.
        (D(2025, 9, 26), 1, D(2025, 9, 28)),
        # Last working day before 国庆 2025 + 1 = first one after it.
        (D(2025, 9, 30), 1, D(2025, 10, 9)),
        # 10 working days from Friday 09-26: 09-28, 29, 30, 10-09, 10, 11 (Sat), 13, 14, 15, 16.
        (D(2025, 9, 26), 10, D(2025, 10, 16)),
        # ... and 15 (catalog update): + 10-17, 20, 21, 22, 23.
        (D(2025, 9, 26), 15, D(2025, 10, 23)),
        # Two days after 10-09 land on the make-up Saturday 10-11.
        (D(2025, 10, 9), 2, D(2025, 10, 11)),
        # 春节 2025: Friday 01-24 + 2 = Sunday 01-26 (make-up) then Monday 01-27.
        (D(2025, 1, 24), 2, D(2025, 1, 27)),
        (D(2025, 1, 27), 1, D(2025, 2, 5)),
        (D(2025, 2, 7), 1, D(2025, 2, 8)),  # Saturday make-up day
        # 春节 2026 from Friday 02-13, 10 days: 02-14 (Sat), 24, 25, 26, 27, 28 (Sat), 03-02, 03, 04, 05.
        (D(2026, 2, 13), 10, D(2026, 3, 5)),
        # 中秋+国庆 2026 from Thursday 09-24: 09-28, 29, 30, 10-08, 09, 10 (Sat), 12, 13, 14, 15.
        (D(2026, 9, 24), 10, D(2026, 10, 15)),
        # Zero days is the start itself.
        (D(2025, 10, 3), 0, D(2025, 10, 3)),
    ],
)
def test_add_working_days_across_holidays_and_make_up_days(start: date, days: int, expected: date) -> None:
    assert add_working_days(start, days) == expected
    assert working_days_between(start, expected) == days


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # Submitted on Saturday: counting starts on the next working day, which is day 1.
        (D(2025, 9, 27), 1, D(2025, 9, 28)),
        (D(2025, 11, 1), 1, D(2025, 11, 3)),  # ordinary Saturday → Monday
        (D(2025, 11, 2), 2, D(2025, 11, 4)),  # ordinary Sunday → Tuesday is day 2
        # Submitted during 国庆: day 1 is the first working day after the holiday.
        (D(2025, 10, 3), 1, D(2025, 10, 9)),
        (D(2025, 10, 3), 10, D(2025, 10, 21)),  # 10-09, 10, 11 (Sat), 13..17, 20, 21
        # Submitted on 中秋 2026 (a Friday): Monday 09-28 is day 1 (the example).
        (D(2026, 9, 25), 1, D(2026, 9, 28)),
        # Submitted on the first day of 春节 2026.
        (D(2026, 2, 15), 1, D(2026, 2, 24)),
    ],
)
def test_submission_on_a_non_working_day_counts_from_the_next_working_day(
    start: date, days: int, expected: date
) -> None:
    assert not is_working_day(start)
    assert add_working_days(start, days) == expected


def test_a_submission_late_in_the_evening_is_still_that_day() -> None:
    assert add_working_days(datetime(2025, 9, 30, 23, 59, 59), 1) == D(2025, 10, 9)


def test_aware_datetimes_count_on_their_beijing_date() -> None:
    # 07:00 on 2025-10-09 in Beijing is 23:00 UTC on 10-08, still a holiday in UTC terms.
    utc_evening = datetime(2025, 10, 8, 23, 0, tzinfo=UTC)
    assert is_working_day(utc_evening)
    assert add_working_days(utc_evening, 1) == D(2025, 10, 10)
    assert add_working_days(datetime(2025, 10, 8, 15, 0, tzinfo=UTC), 1) == D(2025, 10, 9)  # 23:00 Beijing
    assert is_overdue(datetime(2025, 10, 16, 17, 0, tzinfo=UTC), D(2025, 10, 16))  # 01:00 on the 17th
    assert working_days_between(utc_evening, D(2025, 10, 10)) == 1


def test_negative_days_are_refused() -> None:
    with pytest.raises(ValueError):
        add_working_days(D(2025, 9, 30), -1)


# --- deadlines from settings ------------------------------------------------------------


def test_default_deadlines(conf: Settings) -> None:
    assert deadline_days(conf, "provider_answer") == 10
    assert deadline_days(conf, "compliance_review") == 2
    assert deadline_days(conf, "catalog_update") == 15
    assert deadline_days(conf, "need_answer") == 10
    assert conf.reminder_days == (3, 1)
    submitted = D(2025, 9, 26)
    assert due_date(conf, "provider_answer", submitted) == D(2025, 10, 16)
    assert due_date(conf, "need_answer", submitted) == D(2025, 10, 16)
    assert due_date(conf, "catalog_update", submitted) == D(2025, 10, 23)
    # 符合性审查 started the day before 国庆 2026: 10-08 and 10-09.
    assert due_date(conf, "compliance_review", D(2026, 9, 30)) == D(2026, 10, 9)


def test_local_five_day_rule(conf: Settings) -> None:
    local = replace(conf, provider_answer_days=5)
    # 09-28 (Sun, make-up), 29, 30, 10-09, 10.
    assert due_date(local, "provider_answer", D(2025, 9, 26)) == D(2025, 10, 10)
    assert due_date(conf, "provider_answer", D(2025, 9, 26)) == D(2025, 10, 16)


def test_deadlines_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATATONG_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("DATATONG_SECRET_KEY", "k")
    monkeypatch.setenv("DATATONG_PROVIDER_ANSWER_DAYS", "5")
    monkeypatch.setenv("DATATONG_COMPLIANCE_REVIEW_DAYS", "1")
    monkeypatch.setenv("DATATONG_CATALOG_UPDATE_DAYS", "20")
    monkeypatch.setenv("DATATONG_NEED_ANSWER_DAYS", "7")
    monkeypatch.setenv("DATATONG_REMINDER_DAYS", "5, 2,1")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert (s.provider_answer_days, s.compliance_review_days) == (5, 1)
        assert (s.catalog_update_days, s.need_answer_days) == (20, 7)
        assert s.reminder_days == (5, 2, 1)
        assert due_date(s, "provider_answer", D(2025, 9, 26)) == D(2025, 10, 10)
    finally:
        get_settings.cache_clear()


def test_unknown_deadline_kind(conf: Settings) -> None:
    with pytest.raises(ValueError):
        due_date(conf, "coffee_break", D(2025, 9, 26))


# --- countdown, reminders, overdue ------------------------------------------------------


def test_working_days_between_counts_what_is_left_and_what_is_overdue() -> None:
    due = D(2025, 10, 16)
    assert working_days_between(D(2025, 9, 26), due) == 10
    assert working_days_between(D(2025, 9, 30), due) == 7  # 10-09, 10, 11, 13, 14, 15, 16
    assert working_days_between(D(2025, 10, 1), due) == 7  # holidays do not count down
    assert working_days_between(D(2025, 10, 8), due) == 7
    assert working_days_between(due, due) == 0  # due today
    assert working_days_between(D(2025, 10, 17), due) == -1
    assert working_days_between(D(2025, 10, 19), due) == -1  # the weekend does not add to it
    assert working_days_between(D(2025, 10, 20), due) == -2
    assert working_days_between(D(2025, 9, 30), D(2025, 10, 9)) == 1
    assert working_days_between(D(2025, 10, 9), D(2025, 9, 30)) == -1


def _reminders(conf: Settings, first: date, last: date, due: date) -> dict[date, int]:
    out: dict[date, int] = {}
    d = first
    while d <= last:
        r = reminder_due(conf, d, due)
        if r is not None:
            out[d] = r
        d += timedelta(days=1)
    return out


def test_reminders_at_three_and_one_day_left(conf: Settings) -> None:
    # Due 10-16: 3 left on Monday 10-13 (14, 15, 16); 1 left on 10-15.
    # Saturday 10-11 is a make-up working day with 4 left; Sunday 10-12 sends nothing.
    assert _reminders(conf, D(2025, 9, 26), D(2025, 10, 31), D(2025, 10, 16)) == {
        D(2025, 10, 13): 3,
        D(2025, 10, 15): 1,
    }


def test_reminders_across_the_national_day_holiday(conf: Settings) -> None:
    # Five-day rule, due 10-10: 3 left on 09-29 (09-30, 10-09, 10-10), 1 left on 10-09;
    # nothing during the holiday although 2 are left all week.
    local = replace(conf, provider_answer_days=5)
    due = due_date(local, "provider_answer", D(2025, 9, 26))
    assert due == D(2025, 10, 10)
    assert _reminders(local, D(2025, 9, 26), D(2025, 10, 20), due) == {D(2025, 9, 29): 3, D(2025, 10, 9): 1}


def test_overdue_flag() -> None:
    due = D(2025, 10, 16)
    assert not is_overdue(D(2025, 10, 16), due)
    assert not is_overdue(datetime(2025, 10, 16, 23, 0), due)
    assert is_overdue(D(2025, 10, 17), due)


# --- years the calendar does not know ---------------------------------------------------


def test_known_years_come_from_the_package() -> None:
    assert FIRST_YEAR == 2004
    assert LAST_YEAR >= 2026
    assert is_working_day(D(FIRST_YEAR, 1, 2))


@pytest.mark.parametrize(
    "call",
    [
        lambda: is_working_day(D(LAST_YEAR + 1, 1, 4)),
        lambda: is_working_day(D(FIRST_YEAR - 1, 12, 31)),
        # Runs off the end of the last known year part-way through the count.
        lambda: add_working_days(D(LAST_YEAR, 12, 24), 10),
        lambda: working_days_between(D(LAST_YEAR, 12, 1), D(LAST_YEAR + 1, 1, 5)),
        lambda: working_days_between(D(LAST_YEAR + 1, 1, 5), D(LAST_YEAR, 12, 1)),
    ],
)
def test_unknown_year_is_a_clear_error(call: object, strict_calendar: None) -> None:
    assert callable(call)
    with pytest.raises(CalendarUnknownYear) as info:
        call()
    err = info.value
    assert isinstance(err, AppError)
    assert err.code == "sharing.calendar_unknown_year"
    assert err.status_code == 422
    assert str(err.year) in err.message and str(err.year) in err.message_en
    assert err.year in (FIRST_YEAR - 1, LAST_YEAR + 1)
    assert err.to_dict()["error"]["code"] == "sharing.calendar_unknown_year"


@pytest.fixture
def strict_calendar() -> Iterator[None]:
    """The default: a year nobody knows is an error. Restores the suite's mode after."""
    before = workdays.fallback()
    workdays.set_fallback("error")
    workdays.set_supplement({})
    yield
    workdays.set_fallback(before)
    workdays.set_supplement({})


# --- the supplementary calendar (admin-entered years) -----------------------------------

NEXT = LAST_YEAR + 1
# A plausible arrangement for the year after the package's last (test data, not a notice).
NEXT_YEAR_TEXT = f"""
# 测试用安排
{NEXT}-01-01 休 元旦
{NEXT}-02-08 至 {NEXT}-02-12 休 春节
{NEXT}-02-06 班 春节调休
"""


def _first_weekend(year: int, month: int) -> date:
    d = D(year, month, 1)
    while d.weekday() != 5:
        d += timedelta(days=1)
    return d


def test_supplement_makes_an_unknown_year_countable(strict_calendar: None) -> None:
    with pytest.raises(CalendarUnknownYear):
        add_working_days(D(LAST_YEAR, 12, 24), 10)
    plan = calendar.parse(NEXT_YEAR_TEXT, NEXT, "测试通知")
    workdays.set_supplement({NEXT: {d: w for d, (w, _) in plan.days.items()}})
    assert not is_working_day(D(NEXT, 1, 1))
    assert not is_working_day(D(NEXT, 2, 10))
    saturday = _first_weekend(NEXT, 3)
    assert not is_working_day(saturday)  # a plain weekend stays a rest day
    if D(NEXT, 2, 6).weekday() >= 5:
        assert is_working_day(D(NEXT, 2, 6))  # 调休 make-up day
    # The count now runs across the year boundary and skips the entered holiday.
    due = add_working_days(D(LAST_YEAR, 12, 24), 10)
    assert due.year == NEXT
    assert working_days_between(D(LAST_YEAR, 12, 24), due) == 10
    assert not workdays.is_provisional(D(LAST_YEAR, 12, 24), due)
    # Without the entered year the same count is refused again.
    workdays.set_supplement({})
    with pytest.raises(CalendarUnknownYear) as info:
        add_working_days(D(LAST_YEAR, 12, 24), 10)
    assert "calendar import" in info.value.message


def test_supplement_overrides_the_package(strict_calendar: None) -> None:
    # 2025-10-01 is 国庆 in the package; an entered year replaces the package's data whole.
    assert not is_working_day(D(2025, 10, 1))
    workdays.set_supplement({2025: {D(2025, 1, 1): False}})
    assert is_working_day(D(2025, 10, 1))
    assert not is_working_day(D(2025, 1, 1))


def test_weekends_fallback_is_provisional(strict_calendar: None) -> None:
    workdays.set_fallback("weekends")
    monday = D(NEXT, 1, 4) + timedelta(days=(7 - D(NEXT, 1, 4).weekday()) % 7)
    assert is_working_day(monday)
    assert not is_working_day(monday + timedelta(days=5))
    due = add_working_days(D(LAST_YEAR, 12, 24), 10)
    assert workdays.is_provisional(D(LAST_YEAR, 12, 24), due)
    assert not workdays.is_provisional(D(2025, 1, 2), D(2025, 3, 1))
    with pytest.raises(ValueError):
        workdays.set_fallback("guess")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (f"{NEXT}-13-01 休 元旦", "无效"),
        (f"{NEXT}-01-01 放假", "无法识别"),
        (f"{NEXT - 1}-12-31 休 跨年", "不在"),
        (f"{NEXT}-02-12 至 {NEXT}-02-08 休 春节", "结束早于开始"),
        (f"{NEXT}-01-01 休 元旦\n{NEXT}-01-01 班 元旦", "同时"),
        ('{"year": 1999, "holidays": []}', "年份"),
        ('{"year": 2030, "holidays": [1]}', "对象或日期"),
        ("{not json", "JSON"),
    ],
)
def test_calendar_parse_errors_are_clear(content: str, fragment: str) -> None:
    with pytest.raises(AppError) as info:
        calendar.parse(content, NEXT, "测试通知")
    assert info.value.code == "sharing.calendar_invalid"
    assert fragment in info.value.message


def test_make_up_day_must_be_a_weekend() -> None:
    weekday = D(NEXT, 3, 2) + timedelta(days=(0 - D(NEXT, 3, 2).weekday()) % 7)
    with pytest.raises(AppError) as info:
        calendar.parse(f"{weekday} 班 调休", NEXT, "测试通知")
    assert "周一至周五" in info.value.message


def test_calendar_parse_json_ranges() -> None:
    plan = calendar.parse_json(
        {
            "year": 2030,
            "notice": "通知",
            "holidays": [{"from": "2030-10-01", "to": "2030-10-07", "name": "国庆节"}, "2030-01-01"],
            "workdays": [{"date": str(_first_weekend(2030, 9)), "name": "国庆调休"}],
        }
    )
    assert sum(1 for w, _ in plan.days.values() if not w) == 8
    assert plan.days[D(2030, 10, 3)] == (False, "国庆节")


# --- properties -------------------------------------------------------------------------

# Starts far enough before the end of the data that 40 working days (and 60 calendar days)
# stay inside it.
days_known = st.dates(min_value=D(FIRST_YEAR, 1, 1), max_value=D(LAST_YEAR, 10, 15))
counts = st.integers(min_value=0, max_value=40)
PROPS = hsettings(max_examples=300, deadline=None)


@PROPS
@given(days_known, st.integers(min_value=1, max_value=40))
def test_prop_result_is_a_working_day(d: date, n: int) -> None:
    assert is_working_day(add_working_days(d, n))
    assert add_working_days(d, n) > d


@PROPS
@given(days_known, counts, counts)
def test_prop_monotonic_in_days(d: date, a: int, b: int) -> None:
    a, b = sorted((a, b))
    assert add_working_days(d, a) <= add_working_days(d, b)
    if a < b:
        assert add_working_days(d, a) < add_working_days(d, b)


@PROPS
@given(days_known, days_known, counts)
def test_prop_monotonic_in_start(d1: date, d2: date, n: int) -> None:
    d1, d2 = sorted((d1, d2))
    assert add_working_days(d1, n) <= add_working_days(d2, n)


@PROPS
@given(days_known, counts)
def test_prop_between_inverts_add(d: date, n: int) -> None:
    # Holds for every start day, working or not (the start day never counts).
    assert working_days_between(d, add_working_days(d, n)) == n


@PROPS
@given(days_known.filter(is_working_day), counts)
def test_prop_between_inverts_add_from_a_working_day(d: date, n: int) -> None:
    end = add_working_days(d, n)
    assert working_days_between(d, end) == n
    assert working_days_between(end, d) == -n


@PROPS
@given(days_known, st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=20))
def test_prop_add_composes(d: date, a: int, b: int) -> None:
    assert add_working_days(add_working_days(d, a), b) == add_working_days(d, a + b)


@PROPS
@given(days_known, st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=60))
def test_prop_between_matches_a_brute_count(d: date, x: int, y: int) -> None:
    a, b = d + timedelta(days=x), d + timedelta(days=y)
    lo, hi = min(a, b), max(a, b)
    brute = sum(chinese_calendar.is_workday(lo + timedelta(days=i)) for i in range(1, (hi - lo).days + 1))
    assert working_days_between(a, b) == (brute if b >= a else -brute)
    # Additive along the calendar.
    assert working_days_between(d, a) + working_days_between(a, b) == working_days_between(d, b)
