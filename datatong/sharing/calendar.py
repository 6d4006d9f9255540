"""The supplementary working-day calendar (工作日历) kept by the platform admin.

The ``chinese_calendar`` package only knows the years it was released with; each
November the State Council publishes the next year's holiday arrangement (国务院办公厅关于
某年部分节假日安排的通知). Rather than stop counting deadlines until a new package is
released, the platform admin enters the notice here (API, CLI or page). A year entered
here overrides the package for that year.

A year is written as the days that differ from the plain week, either as JSON::

    {"year": 2027, "notice": "国办发明电〔2026〕7号",
     "holidays": [{"date": "2027-01-01", "name": "元旦"}, {"from": "2027-02-06", "to": "2027-02-12", "name": "春节"}],
     "workdays": [{"date": "2027-02-14", "name": "春节调休"}]}

or as text, one line per day or range (休 = holiday, 班 = 调休 make-up working day)::

    2027-01-01 休 元旦
    2027-02-06 至 2027-02-12 休 春节
    2027-02-14 班 春节调休
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.errors import NotFound, Unauthenticated, ValidationFailed
from datatong.orgs.service import Principal, require_platform_admin
from datatong.sharing import workdays
from datatong.sharing.models import WorkCalendarDay, WorkCalendarYear

MAX_DAYS_PER_YEAR = 120  # a notice lists ~30; more is a typing error
_LINE = re.compile(
    r"^\s*(\d{4}-\d{1,2}-\d{1,2})\s*(?:(?:至|到|-|~|—)\s*(\d{4}-\d{1,2}-\d{1,2}))?\s+(休|班)\s*(.*?)\s*$"
)


def _bad(message: str, message_en: str) -> ValidationFailed:
    return ValidationFailed("sharing.calendar_invalid", message, message_en)


@dataclass
class YearPlan:
    """One year's arrangement: day → (is_working, name)."""

    year: int
    notice: str
    days: dict[date, tuple[bool, str | None]] = field(default_factory=dict)

    def add(self, first: date, last: date, working: bool, name: str | None) -> None:
        if last < first:
            raise _bad(f"日期区间 {first}–{last} 的结束早于开始", f"range {first}–{last} ends before it starts")
        d = first
        while d <= last:
            self._add_day(d, working, name)
            d += timedelta(days=1)

    def _add_day(self, d: date, working: bool, name: str | None) -> None:
        if d.year != self.year:
            raise _bad(f"{d} 不在 {self.year} 年内", f"{d} is not in {self.year}")
        if d in self.days and self.days[d][0] != working:
            raise _bad(f"{d} 同时被列为放假和调休上班", f"{d} is listed both as a holiday and as a working day")
        if working and d.weekday() < 5:
            raise _bad(
                f"{d} 是工作日（周一至周五），无需列为调休上班",
                f"{d} is a weekday already; only weekend days can be make-up working days",
            )
        self.days[d] = (working, name or None)
        if len(self.days) > MAX_DAYS_PER_YEAR:
            raise _bad(f"一年最多列 {MAX_DAYS_PER_YEAR} 天", f"at most {MAX_DAYS_PER_YEAR} days per year")


def _date(value: Any, where: str) -> date:
    try:
        y, m, d = (int(p) for p in str(value).strip().split("-"))
        return date(y, m, d)
    except (ValueError, TypeError):
        raise _bad(
            f"{where}：日期 {value!r} 无效，应为 YYYY-MM-DD", f"{where}: invalid date {value!r}, expected YYYY-MM-DD"
        ) from None


def _check_year(year: Any) -> int:
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2100:
        raise _bad("年份应为 2000–2100 之间的整数", "year must be an integer between 2000 and 2100")
    return year


def parse_json(data: Any, year: int | None = None, notice: str | None = None) -> YearPlan:
    """A year from the JSON shape in the module doc (``year``/``notice`` may come from the caller)."""
    if not isinstance(data, dict):
        raise _bad("工作日历应为 JSON 对象", "the calendar must be a JSON object")
    plan = YearPlan(_check_year(data.get("year", year)), str(data.get("notice") or notice or "").strip())
    for key, working in (("holidays", False), ("workdays", True)):
        rows = data.get(key) or []
        if not isinstance(rows, list):
            raise _bad(f"{key} 应为数组", f"{key} must be an array")
        for i, row in enumerate(rows):
            where = f"{key}[{i}]"
            if isinstance(row, str):
                row = {"date": row}
            if not isinstance(row, dict):
                raise _bad(f"{where} 应为对象或日期", f"{where} must be an object or a date")
            first = _date(row.get("date", row.get("from")), where)
            last = _date(row["to"], where) if row.get("to") else first
            plan.add(first, last, working, (str(row.get("name") or "").strip() or None))
    return plan


def parse_text(text: str, year: int, notice: str) -> YearPlan:
    """A year from lines like ``2027-02-06 至 2027-02-12 休 春节`` (see module doc)."""
    plan = YearPlan(_check_year(year), notice.strip())
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise _bad(
                f"第 {n} 行无法识别：{line.strip()!r}（格式：2027-01-01 休 元旦，或 2027-02-14 班 春节调休）",
                f"line {n} not understood: {line.strip()!r} (format: 2027-01-01 休 元旦 / 2027-02-14 班 name)",
            )
        first = _date(m.group(1), f"第 {n} 行")
        last = _date(m.group(2), f"第 {n} 行") if m.group(2) else first
        plan.add(first, last, m.group(3) == "班", m.group(4) or None)
    return plan


def parse(content: str, year: int | None = None, notice: str | None = None) -> YearPlan:
    """JSON when it looks like JSON, else the text format (which then needs ``year``)."""
    stripped = content.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise _bad(
                f"JSON 无效：{exc.msg}（第 {exc.lineno} 行）", f"invalid JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        return parse_json(data, year, notice)
    if year is None:
        raise _bad("文本格式需要指定年份", "the text format needs the year")
    return parse_text(content, year, notice or "")


def import_year(session: Session, principal: Principal, plan: YearPlan) -> WorkCalendarYear:
    """Enter (or replace) a year; audited. The new days count from the next deadline on."""
    require_platform_admin(principal)
    if not plan.notice:
        raise _bad("请填写通知文号或标题（如 国办发明电〔2026〕7号）", "the notice (its number or title) is required")
    if not any(not working for working, _ in plan.days.values()):
        raise _bad("至少应有一个放假日", "a holiday arrangement lists at least one holiday")
    replaced = session.get(WorkCalendarYear, plan.year) is not None
    session.execute(delete(WorkCalendarDay).where(WorkCalendarDay.year == plan.year))
    session.execute(delete(WorkCalendarYear).where(WorkCalendarYear.year == plan.year))
    row = WorkCalendarYear(year=plan.year, notice=plan.notice[:200], imported_by=principal.username)
    session.add(row)
    session.flush()
    session.add_all(
        WorkCalendarDay(day=d, year=plan.year, is_working=w, name=(name or None) and name[:50])
        for d, (w, name) in sorted(plan.days.items())
    )
    session.flush()
    holidays = sum(1 for w, _ in plan.days.values() if not w)
    record(
        session,
        principal,
        "sharing.calendar.import",
        resource=f"work_calendar:{plan.year}",
        detail={
            "year": plan.year,
            "notice": plan.notice,
            "holidays": holidays,
            "workdays": len(plan.days) - holidays,
            "replaced": replaced,
        },
    )
    session.flush()
    load(session)
    return row


def delete_year(session: Session, principal: Principal, year: int) -> None:
    """Remove an entered year (the package's data, if any, applies again)."""
    require_platform_admin(principal)
    if session.get(WorkCalendarYear, year) is None:
        raise NotFound(f"{year} 年工作日历", f"work calendar {year}")
    session.execute(delete(WorkCalendarDay).where(WorkCalendarDay.year == year))
    session.execute(delete(WorkCalendarYear).where(WorkCalendarYear.year == year))
    record(session, principal, "sharing.calendar.delete", resource=f"work_calendar:{year}", detail={"year": year})
    session.flush()
    load(session)


def list_years(session: Session, principal: Principal) -> list[dict[str, Any]]:
    """Every year the platform can count, with where its data comes from (any signed-in
    user may read it: due dates are computed from it)."""
    if not principal.is_authenticated:
        raise Unauthenticated()
    entered = {y.year: y for y in session.scalars(select(WorkCalendarYear))}
    out: list[dict[str, Any]] = []
    for year in sorted(set(range(workdays.FIRST_YEAR, workdays.LAST_YEAR + 1)) | set(entered)):
        row = entered.get(year)
        out.append(
            {
                "year": year,
                "source": "platform" if row else "package",
                "notice": row.notice if row else None,
                "imported_by": row.imported_by if row else None,
                "imported_at": row.imported_at if row else None,
            }
        )
    return out


def year_days(session: Session, year: int) -> list[WorkCalendarDay]:
    return list(
        session.scalars(select(WorkCalendarDay).where(WorkCalendarDay.year == year).order_by(WorkCalendarDay.day))
    )


# ------------------------------------------------------------------ loading into workdays

_lock = threading.Lock()
_loaded_at: float | None = None
REFRESH_SECONDS = 60.0  # other processes see an import within a minute


def load(session: Session) -> None:
    """Read every entered year into ``workdays`` (this process)."""
    global _loaded_at
    years: dict[int, dict[date, bool]] = {y: {} for y in session.scalars(select(WorkCalendarYear.year))}
    for day in session.scalars(select(WorkCalendarDay)):
        years.setdefault(day.year, {})[day.day] = day.is_working
    with _lock:
        workdays.set_supplement(years)
        _loaded_at = time.monotonic()


def refresh(session: Session, max_age: float = REFRESH_SECONDS) -> None:
    """Reload when this process last loaded more than ``max_age`` seconds ago; called
    before a deadline is computed, so an import in another process is seen soon."""
    if _loaded_at is None or time.monotonic() - _loaded_at > max_age:
        load(session)
