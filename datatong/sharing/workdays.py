"""Deadlines on the Chinese working-day calendar (工作日).

Statutory holidays and 调休 make-up working days come from two sources, in this order:

1. the *supplement*: years the platform admin entered from the State Council's notice
   (国务院办公厅关于某年部分节假日安排的通知, see ``calendar.py``), loaded into this module by
   :func:`set_supplement`; a supplementary year overrides the package, so a correction
   never needs a release;
2. the ``chinese_calendar`` package (pinned in pyproject), which knows the years it was
   released with.

A date in a year neither knows raises :class:`CalendarUnknownYear` (code
``sharing.calendar_unknown_year``) instead of guessing, unless the deployment chose the
``weekends`` fallback (``DATATONG_CALENDAR_FALLBACK``): then Monday–Friday count as working
days and every deadline touching such a year is *provisional* (:func:`is_provisional`),
shown as 暂估 and recomputed once the year is entered.

Counting rule (as 民法典 art. 201: the starting day is not counted):

* ``add_working_days(start, n)`` is the *n*-th working day strictly after ``start``.
  The day of submission never counts, whatever kind of day it is. A submission on a
  weekend or holiday therefore counts from the next working day, which is day 1:
  submitted Saturday, ``n=1`` → the following Monday (if Monday is a working day).
  ``n=0`` returns ``start`` itself (as a date). An aware datetime counts on its Beijing
  date (a submission at 07:00 Beijing time on 10-09 is 23:00 UTC on a holiday, 10-08).
* ``working_days_between(start, end)`` counts the working days in ``(start, end]``; it is
  negative (minus the working days in ``(end, start]``) when ``end`` is before ``start``.
  With ``start`` = today and ``end`` = the due date it is the number of working days left:
  ``0`` means due today, ``-1`` one working day overdue. For every ``d`` and ``n >= 0``:
  ``working_days_between(d, add_working_days(d, n)) == n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING

import chinese_calendar
from chinese_calendar import constants as _cc_constants

from datatong.errors import ValidationFailed

if TYPE_CHECKING:
    from datatong.settings import Settings

# The years the installed chinese_calendar has data for (both ends included).
FIRST_YEAR: int = min(_cc_constants.holidays).year
LAST_YEAR: int = max(_cc_constants.holidays).year

# Deadline kinds and the Settings field that holds each one's number of working days.
DEADLINE_SETTINGS: dict[str, str] = {
    "provider_answer": "provider_answer_days",  # provider answers an application (default 10)
    "compliance_review": "compliance_review_days",  # optional 符合性审查 (default 2)
    "catalog_update": "catalog_update_days",  # catalog entry updated after item change (default 15)
    "need_answer": "need_answer_days",  # department answers a 需求 (default 10)
}


class CalendarUnknownYear(ValidationFailed):
    """A date lies in a year the working-day calendar has no holiday data for."""

    def __init__(self, year: int) -> None:
        known = f"{FIRST_YEAR}–{LAST_YEAR}"
        extra = sorted(y for y in _SUPPLEMENT if y > LAST_YEAR or y < FIRST_YEAR)
        if extra:
            known += "、" + "、".join(str(y) for y in extra)
        super().__init__(
            "sharing.calendar_unknown_year",
            f"工作日历尚无 {year} 年的法定节假日安排（已知：{known} 年），无法计算期限；"
            f"请平台管理员按国务院办公厅通知导入 {year} 年节假日安排（datatong calendar import）",
            f"The working-day calendar has no holiday data for {year} (known: {known}); "
            f"the platform admin must import {year}'s holiday arrangement (datatong calendar import)",
        )
        self.year = year


# Supplementary years: year → {day: is_working} for the days that differ from the plain
# week. Replaced whole by set_supplement (never mutated in place), so readers need no lock.
_SUPPLEMENT: dict[int, dict[date, bool]] = {}
_FALLBACK = "error"  # "error" | "weekends"
FALLBACKS = ("error", "weekends")


def set_supplement(years: Mapping[int, Mapping[date, bool]]) -> None:
    """Install the admin-entered years (see calendar.py); clears the day cache."""
    global _SUPPLEMENT
    _SUPPLEMENT = {int(y): dict(days) for y, days in years.items()}
    _is_working_day.cache_clear()


def set_fallback(mode: str) -> None:
    """How to treat a year nobody knows: ``error`` (refuse) or ``weekends`` (provisional)."""
    global _FALLBACK
    if mode not in FALLBACKS:
        raise ValueError(f"calendar fallback must be one of {FALLBACKS}, not {mode!r}")
    _FALLBACK = mode
    _is_working_day.cache_clear()


def fallback() -> str:
    return _FALLBACK


def year_known(year: int) -> bool:
    """Whether ``year``'s holidays are known (entered by the admin or in the package)."""
    return year in _SUPPLEMENT or FIRST_YEAR <= year <= LAST_YEAR


def is_provisional(start: date | datetime, end: date | datetime) -> bool:
    """Whether a deadline from ``start`` to ``end`` was counted over a year nobody knows
    (only possible with the ``weekends`` fallback): it is an estimate (暂估)."""
    a, b = sorted((local_date(start), local_date(end)))
    return any(not year_known(y) for y in range(a.year, b.year + 1))


# The calendar is Beijing's: China keeps no daylight saving time, a fixed offset is Asia/Shanghai.
BEIJING = timezone(timedelta(hours=8), "北京时间")


def local_date(d: date | datetime) -> date:
    """The calendar day of ``d``: an aware datetime (the platform stores UTC) is read in
    Beijing time; a naive datetime is taken as already local."""
    if isinstance(d, datetime):
        return d.astimezone(BEIJING).date() if d.tzinfo is not None else d.date()
    return d


@lru_cache(maxsize=8192)
def _is_working_day(d: date) -> bool:
    days = _SUPPLEMENT.get(d.year)
    if days is not None:
        return days.get(d, d.weekday() < 5)
    if not FIRST_YEAR <= d.year <= LAST_YEAR:
        if _FALLBACK == "weekends":
            return d.weekday() < 5
        raise CalendarUnknownYear(d.year)
    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError as exc:  # defensive: the package's own range check
        raise CalendarUnknownYear(d.year) from exc


def is_working_day(d: date | datetime) -> bool:
    """Whether ``d`` is a working day (weekday not a holiday, or a 调休 make-up day)."""
    return _is_working_day(local_date(d))


def add_working_days(start: date | datetime, days: int) -> date:
    """The date on which ``days`` working days have passed after ``start`` (see module doc)."""
    if days < 0:
        raise ValueError("days must be >= 0")
    d = local_date(start)
    remaining = days
    while remaining:
        d += timedelta(days=1)
        if _is_working_day(d):
            remaining -= 1
    return d


def working_days_between(start: date | datetime, end: date | datetime) -> int:
    """Working days in ``(start, end]``; negative when ``end`` is before ``start``."""
    a, b = local_date(start), local_date(end)
    sign = 1
    if b < a:
        a, b, sign = b, a, -1
    count = 0
    d = a
    while d < b:
        d += timedelta(days=1)
        if _is_working_day(d):
            count += 1
    return sign * count


def deadline_days(settings: Settings, kind: str) -> int:
    """The number of working days allowed for a deadline ``kind`` (see DEADLINE_SETTINGS)."""
    try:
        field = DEADLINE_SETTINGS[kind]
    except KeyError:
        raise ValueError(f"unknown deadline kind {kind!r}") from None
    return int(getattr(settings, field))


def due_date(settings: Settings, kind: str, start: date | datetime) -> date:
    """Due date of a deadline ``kind`` that starts on ``start`` (e.g. an application's submission)."""
    return add_working_days(start, deadline_days(settings, kind))


def reminder_due(settings: Settings, today: date | datetime, due: date | datetime) -> int | None:
    """The reminder to send today: the number of working days left when it is one of
    ``settings.reminder_days`` (3 and 1 by default) and today is a working day, else None."""
    if not is_working_day(today):
        return None
    left = working_days_between(today, due)
    return left if left in settings.reminder_days else None


def is_overdue(today: date | datetime, due: date | datetime) -> bool:
    """Whether a deadline due on ``due`` has passed on ``today`` (due day itself is in time)."""
    return local_date(today) > local_date(due)
