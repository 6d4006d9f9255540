"""The platform admin's supplementary work calendar (工作日历): entering a year the
installed chinesecalendar does not know, through the API and the CLI, and what it does to
the due dates of applications whose clock is running."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from conftest import auth
from sharing_helpers import call, draft, published, who
from typer.testing import CliRunner

from datatong.cli import app as cli
from datatong.sharing import service, workdays

NEXT = workdays.LAST_YEAR + 1
SUBMITTED = datetime(workdays.LAST_YEAR, 12, 24, 2, 0, tzinfo=UTC)  # 10:00 Beijing
# The first working day of NEXT that is a Monday–Friday: made a holiday below.
NEW_YEAR = date(NEXT, 1, 1)


def _holidays() -> list[dict[str, str]]:
    # Three weekdays off early in January, so the 10-working-day count must move.
    days = [NEW_YEAR + timedelta(days=i) for i in range(10)]
    weekdays = [d for d in days if d.weekday() < 5][:3]
    return [{"date": d.isoformat(), "name": "测试假日"} for d in weekdays]


def _submit_across_year_end(client: Any, settings: Any) -> int:
    entry = published(client)
    app_id = draft(settings, entry["id"], period_start=date(workdays.LAST_YEAR, 12, 24), period_end=date(NEXT, 12, 31))
    call(settings, service.submit, settings, who(settings, "mz_officer"), app_id, accept_commitment=True, now=SUBMITTED)
    return app_id


def test_import_year_moves_provisional_due_dates(client: Any, settings: Any) -> None:
    app_id = _submit_across_year_end(client, settings)
    admin = auth(client, "admin")
    before = client.get(f"/api/v1/sharing/applications/{app_id}", headers=admin).json()
    assert before["due_provisional"] is True  # counted on weekends only (suite's fallback)
    weekend_due = date.fromisoformat(before["due_at"])
    assert weekend_due.year == NEXT

    r = client.put(
        f"/api/v1/sharing/calendar/{NEXT}",
        headers=admin,
        json={"notice": "国办发明电（测试）", "holidays": _holidays()},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "platform" and body["notice"] == "国办发明电（测试）"
    assert len(body["days"]) == 3 and body["due_dates_moved"] == 1

    after = client.get(f"/api/v1/sharing/applications/{app_id}", headers=admin).json()
    assert after["due_provisional"] is False
    assert date.fromisoformat(after["due_at"]) > weekend_due  # three more days off
    assert date.fromisoformat(after["due_at"]) == workdays.add_working_days(SUBMITTED, 10)

    years = client.get("/api/v1/sharing/calendar", headers=auth(client, "mz_officer")).json()
    assert {"year": NEXT, "source": "platform"}.items() <= next(y for y in years if y["year"] == NEXT).items()
    assert next(y for y in years if y["year"] == 2025)["source"] == "package"

    records = client.get("/api/v1/audit/records", params={"action": "sharing.calendar."}, headers=admin).json()
    assert any(r["action"] == "sharing.calendar.import" for r in records["items"])

    # Deleting the year brings the weekend estimate back.
    assert client.delete(f"/api/v1/sharing/calendar/{NEXT}", headers=admin).status_code == 204
    again = client.get(f"/api/v1/sharing/applications/{app_id}", headers=admin).json()
    assert again["due_at"] == before["due_at"] and again["due_provisional"] is True


def test_import_errors_are_clear_and_keep_the_old_year(client: Any) -> None:
    admin = auth(client, "admin")
    ok = {"notice": "通知一", "holidays": [f"{NEXT}-01-01"]}
    assert client.put(f"/api/v1/sharing/calendar/{NEXT}", headers=admin, json=ok).status_code == 200
    bad = {"notice": "通知二", "holidays": [f"{NEXT}-01-01", f"{NEXT + 1}-01-01"]}
    r = client.put(f"/api/v1/sharing/calendar/{NEXT}", headers=admin, json=bad)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "sharing.calendar_invalid"
    assert "不在" in r.json()["error"]["message"] and r.json()["error"]["message_en"]
    kept = client.get(f"/api/v1/sharing/calendar/{NEXT}", headers=admin).json()
    assert kept["notice"] == "通知一" and [d["day"] for d in kept["days"]] == [f"{NEXT}-01-01"]
    r = client.put(f"/api/v1/sharing/calendar/{NEXT}", headers=admin, json={"notice": "无假日", "holidays": []})
    assert r.status_code == 422
    assert client.get(f"/api/v1/sharing/calendar/{NEXT + 5}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/sharing/calendar/{NEXT + 5}", headers=admin).status_code == 404


def test_strict_mode_refuses_submission_with_the_fix_named(client: Any, settings: Any) -> None:
    entry = published(client)
    app_id = draft(settings, entry["id"], period_start=date(workdays.LAST_YEAR, 12, 24), period_end=date(NEXT, 12, 31))
    workdays.set_fallback("error")
    try:
        try:
            call(
                settings,
                service.submit,
                settings,
                who(settings, "mz_officer"),
                app_id,
                accept_commitment=True,
                now=SUBMITTED,
            )
        except workdays.CalendarUnknownYear as exc:
            assert exc.code == "sharing.calendar_unknown_year"
            assert f"导入 {NEXT} 年节假日安排" in exc.message
        else:
            raise AssertionError("submission counted over an unknown year")
        # Nothing half-written: still a draft.
        app = client.get(f"/api/v1/sharing/applications/{app_id}", headers=auth(client, "mz_officer")).json()
        assert app["status"] == "draft" and app["due_at"] is None
        # Once the year is entered the same submission goes through.
        admin = auth(client, "admin")
        client.put(
            f"/api/v1/sharing/calendar/{NEXT}", headers=admin, json={"notice": "通知", "holidays": _holidays()}
        ).raise_for_status()
        done = call(
            settings,
            service.submit,
            settings,
            who(settings, "mz_officer"),
            app_id,
            accept_commitment=True,
            now=SUBMITTED,
        )
        assert done.status == "awaiting_provider"
    finally:
        workdays.set_fallback("weekends")


def test_cli_imports_text_format(client: Any, settings: Any, tmp_path: Any, monkeypatch: Any) -> None:
    text = tmp_path / "holidays.txt"
    text.write_text(f"{NEXT}-01-01 休 元旦\n{NEXT}-10-01 至 {NEXT}-10-03 休 国庆节\n", encoding="utf-8")
    monkeypatch.setenv("DATATONG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATATONG_VAR_DIR", str(settings.var_dir))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["calendar", "import", str(text), "--year", str(NEXT), "--notice", "测试通知", "--by", "admin"]
    )
    assert result.exit_code == 0, result.output
    assert "4" in result.output
    listed = runner.invoke(cli, ["calendar", "list"])
    assert listed.exit_code == 0 and str(NEXT) in listed.output and "测试通知" in listed.output
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{NEXT}-01-01 放假\n", encoding="utf-8")
    result = runner.invoke(cli, ["calendar", "import", str(bad), "--year", str(NEXT), "--notice", "x", "--by", "admin"])
    assert result.exit_code == 2 and "无法识别" in result.output
    result = runner.invoke(
        cli, ["calendar", "import", str(text), "--year", str(NEXT), "--notice", "x", "--by", "mz_officer"]
    )
    assert result.exit_code == 2
