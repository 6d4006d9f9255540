"""``datatong exchange``: test a data source, load a file into a file source."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from datatong.errors import AppError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from datatong.orgs.service import Principal

exchange_app = typer.Typer(help="数据交换：数据源、订阅工作进程", no_args_is_help=True)
console = Console(stderr=True)


def _fail(exc: AppError) -> None:
    console.print(f"[red]错误[/red] {exc.message}（{exc.code}）\n{exc.message_en}")
    for d in exc.details[:50]:
        console.print(f"  第 {d.get('row')} 行 {d.get('column')}：{d.get('message')}")
    raise typer.Exit(2)


def _principal(session: Session, by: str | None) -> Principal:
    """The user named by ``--by``, else the operator of the server (acting as platform admin)."""
    from sqlalchemy import select

    from datatong.orgs.models import Role, User
    from datatong.orgs.service import Principal, principal_for

    if by is None:
        return Principal("user", None, "cli", "命令行操作员", Role.PLATFORM_ADMIN, None)
    user = session.scalar(select(User).where(User.username == by))
    if user is None:
        console.print(f"[red]错误[/red] 用户 {by} 不存在")
        raise typer.Exit(2)
    return principal_for(user)


def _source_id(session: Session, code: str) -> int:
    from datatong.exchange.sources import source_by_entry_code

    source = source_by_entry_code(session, code)
    if source is None:
        console.print(f"[red]错误[/red] 信息资源 {code} 没有数据源（或不存在）")
        raise typer.Exit(2)
    return source.id


BY = typer.Option(None, "--by", help="以该用户身份操作（记入审计日志）；省略时以命令行操作员（平台管理员）身份")


@exchange_app.command("source-test")
def source_test(
    entry_code: str = typer.Argument(..., help="信息资源代码"),
    by: str = BY,
) -> None:
    """测试信息资源的数据源：连通、账号、表和每个映射列。失败时退出码为 1。"""
    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.exchange import sources
    from datatong.settings import get_settings

    settings = get_settings()
    prepare_database(settings)
    try:
        with session_scope(settings.database_url) as session:
            result = sources.test_source(session, settings, _principal(session, by), _source_id(session, entry_code))
    except AppError as exc:
        _fail(exc)
    if result.ok:
        console.print(f"[green]数据源正常[/green]（{entry_code}）")
        return
    err = result.error or {}
    console.print(f"[red]数据源不可用[/red] {err.get('message')}（{err.get('code')}）\n{err.get('message_en')}")
    raise typer.Exit(1)


@exchange_app.command("load-file")
def load_file(
    entry_code: str = typer.Argument(..., help="信息资源代码"),
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CSV（UTF-8/GBK）或 .xlsx；首行为信息项名称或代码"
    ),
    by: str = BY,
) -> None:
    """把文件载入文件数据源（整体替换；有任何错误则不载入）。"""
    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.exchange import sources
    from datatong.settings import get_settings

    settings = get_settings()
    prepare_database(settings)
    try:
        with session_scope(settings.database_url) as session, file.open("rb") as fh:
            source = sources.load_file(
                session,
                settings,
                _principal(session, by),
                _source_id(session, entry_code),
                file.name,
                fh,
            )
            rows = source.rows
    except AppError as exc:
        _fail(exc)
    console.print(f"[green]已载入 {rows} 行[/green]（{entry_code}）")


@exchange_app.command("worker")
def worker(
    once: bool = typer.Option(False, "--once", help="只运行一轮（采集一次、推送一次）后退出"),
    idle: float = typer.Option(0.5, help="无事可做时的等待秒数"),
) -> None:
    """订阅工作进程：采集数据源变更写入总线，按订阅推送（DATATONG_BUS_URL 选择总线）。"""
    import signal
    import threading

    from datatong.app import prepare_database
    from datatong.exchange import delivery
    from datatong.settings import get_settings

    settings = get_settings()
    prepare_database(settings)
    bus = "NATS JetStream" if settings.bus_url.startswith(("nats://", "tls://")) else "数据库发件箱"
    if once:
        counts = delivery.run_once(settings)
        console.print(f"采集 {counts['captured']} 条变更，推送 {counts['delivered']} 条（{bus}）")
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"订阅工作进程已启动（{bus}），Ctrl+C 停止")
    delivery.run_forever(settings, stop, idle=idle)
