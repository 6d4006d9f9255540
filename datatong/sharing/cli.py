"""``datatong calendar``: the supplementary work calendar from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from datatong.errors import AppError

calendar_app = typer.Typer(help="工作日历（法定节假日与调休）", no_args_is_help=True)
console = Console(stderr=True)


def _fail(exc: AppError) -> None:
    console.print(f"[red]错误[/red] {exc.message}（{exc.code}）")
    raise typer.Exit(2)


@calendar_app.command("import")
def calendar_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON 或文本（每行：2027-01-01 休 元旦）"),
    year: int = typer.Option(None, help="年份（文本格式必填；JSON 可在文件中给出）"),
    notice: str = typer.Option(None, help="国务院办公厅通知文号或标题"),
    by: str = typer.Option(..., "--by", help="操作的平台管理员用户名（记入审计日志）"),
) -> None:
    """导入某年节假日安排（覆盖 chinesecalendar 的该年数据），并重算在办申请的答复期限。"""
    from sqlalchemy import select

    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.orgs.models import User
    from datatong.orgs.service import principal_for
    from datatong.settings import get_settings
    from datatong.sharing import calendar, service

    settings = get_settings()
    prepare_database(settings)
    try:
        plan = calendar.parse(file.read_text(encoding="utf-8-sig"), year, notice)
        with session_scope(settings.database_url) as session:
            user = session.scalar(select(User).where(User.username == by))
            if user is None:
                console.print(f"[red]错误[/red] 用户 {by} 不存在")
                raise typer.Exit(2)
            calendar.import_year(session, principal_for(user), plan)
            moved = service.recompute_due_dates(session, settings)
    except AppError as exc:
        _fail(exc)
    holidays = sum(1 for w, _ in plan.days.values() if not w)
    console.print(
        f"[green]已导入 {plan.year} 年工作日历[/green]：放假 {holidays} 天，调休上班 {len(plan.days) - holidays} 天；"
        f"重算期限的申请 {moved} 件"
    )


@calendar_app.command("list")
def calendar_list() -> None:
    """列出可计算期限的年份及数据来源。"""
    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.orgs.service import Principal
    from datatong.settings import get_settings
    from datatong.sharing import calendar

    settings = get_settings()
    prepare_database(settings)
    reader = Principal("user", None, "cli", "命令行", "platform_admin", None)
    table = Table("年份", "来源", "通知", "导入人")
    with session_scope(settings.database_url) as session:
        for y in calendar.list_years(session, reader):
            source = "平台导入" if y["source"] == "platform" else "chinesecalendar"
            table.add_row(str(y["year"]), source, y["notice"] or "", y["imported_by"] or "")
    Console().print(table)


sharing_app = typer.Typer(help="共享：定时任务（期限提醒、逾期督办、授权到期、Webhook 推送）", no_args_is_help=True)


@sharing_app.command("run-jobs")
def run_jobs() -> None:
    """运行一次全部共享定时任务，输出各项计数（JSON）。"""
    import json

    from datatong.app import prepare_database
    from datatong.settings import get_settings
    from datatong.sharing import jobs

    settings = get_settings()
    prepare_database(settings)
    print(json.dumps(jobs.run_all(settings.database_url, settings), ensure_ascii=False))
