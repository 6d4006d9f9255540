"""The ``datatong`` command line (Typer + Rich)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from datatong.audit.cli import audit_app, keys_app
from datatong.errors import AppError
from datatong.exchange.cli import exchange_app
from datatong.exchange.receipt_cli import receipt_app
from datatong.sharing.cli import calendar_app, sharing_app

app = typer.Typer(help="数据通 Datatong — 政务信息资源共享交换平台", no_args_is_help=True)
db_app = typer.Typer(help="数据库结构（迁移）", no_args_is_help=True)
user_app = typer.Typer(help="用户管理", no_args_is_help=True)
dept_app = typer.Typer(help="部门管理", no_args_is_help=True)
catalog_app = typer.Typer(help="目录导入导出", no_args_is_help=True)
bench_app = typer.Typer(help="性能基准（输出一个 JSON 对象）", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(dept_app, name="department")
app.add_typer(catalog_app, name="catalog")
app.add_typer(bench_app, name="bench")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(calendar_app, name="calendar")
app.add_typer(sharing_app, name="sharing")
app.add_typer(exchange_app, name="exchange")
app.add_typer(receipt_app, name="receipt")
console = Console(stderr=True)


def _settings():  # type: ignore[no-untyped-def]
    from datatong.settings import get_settings

    return get_settings()


def _fail(exc: AppError) -> None:
    console.print(f"[red]错误[/red] {exc.message}（{exc.code}）")
    for d in exc.details[:50]:
        console.print(f"  - {d.get('message', d)}")
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """升级数据库结构到最新版本（alembic upgrade head）并写入基础分类。"""
    from datatong.app import prepare_database

    settings = _settings()
    prepare_database(settings)
    console.print(f"[green]数据库已是最新结构[/green] {settings.database_url.split('@')[-1]}")


@user_app.command("create")
def user_create(
    username: str = typer.Argument(..., help="用户名"),
    role: str = typer.Option(..., help="platform_admin/dept_admin/data_officer/auditor"),
    department: str = typer.Option(..., help="部门代码"),
    display_name: str = typer.Option(None, help="姓名，默认同用户名"),
    password: str = typer.Option(None, help="密码；省略时从环境变量 DATATONG_PASSWORD 或交互输入读取"),
) -> None:
    """新建用户（命令行操作者视为平台管理员）。"""
    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.orgs.service import create_user

    settings = _settings()
    prepare_database(settings)
    password = (
        password
        or os.environ.get("DATATONG_PASSWORD")
        or typer.prompt("密码", hide_input=True, confirmation_prompt=True)
    )
    try:
        with session_scope(settings.database_url) as session:
            user = create_user(session, None, username, display_name or username, password, role, department)
            console.print(f"[green]已创建用户[/green] {user.username}（{role}，{department}）")
    except AppError as exc:
        _fail(exc)


@dept_app.command("import")
def department_import(
    file: Path = typer.Argument(..., exists=True, help="CSV 或 xlsx：code,name,level,parent_code"),
) -> None:
    """从 CSV/Excel 导入部门（全部成功或全部不导入）。"""
    from datatong.app import prepare_database
    from datatong.db import session_scope
    from datatong.orgs.importer import read_rows
    from datatong.orgs.service import import_departments

    settings = _settings()
    prepare_database(settings)
    try:
        rows = read_rows(file)
        with session_scope(settings.database_url) as session:
            n = import_departments(session, None, rows)
        console.print(f"[green]已导入 {n} 个部门[/green]")
    except AppError as exc:
        _fail(exc)


@catalog_app.command("import")
def catalog_import(
    file: Path = typer.Argument(..., exists=True, help="目录模板 xlsx 或 csv"),
    as_user: str = typer.Option(..., "--as", help="以哪个用户的身份导入（记入版本历史）"),
) -> None:
    """导入目录（全部成功或全部不导入；逐行报告错误）。"""
    from datatong.catalog.excel import cli_import

    cli_import(_settings(), file, as_user, console)


@catalog_app.command("export")
def catalog_export(
    out: Path = typer.Argument(..., help="输出文件 .xlsx 或 .csv"),
    q: str = typer.Option("", help="检索关键词"),
    as_user: str = typer.Option(..., "--as", help="以哪个用户的身份检索（决定可见范围）"),
) -> None:
    """把检索结果导出为 Excel 或 CSV。"""
    from datatong.catalog.excel import cli_export

    cli_export(_settings(), out, q, as_user, console)


@catalog_app.command("template")
def catalog_template(out: Path = typer.Argument(Path("目录编制模板.xlsx"))) -> None:
    """生成空白目录编制模板。"""
    from datatong.catalog.excel import write_template

    out.write_bytes(write_template())
    console.print(f"[green]已生成[/green] {out}")


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """启动平台（升级数据库结构后提供 Web 界面与 API）。"""
    import uvicorn

    from datatong.app import create_app

    settings = _settings()
    app_ = create_app(settings)
    _warm_search_index(settings.database_url)
    from datatong.sharing.jobs import start_background

    start_background(settings)  # reminders, overdue, expiry, webhooks (DATATONG_JOB_INTERVAL=0: off)
    if os.environ.get("DATATONG_SUBSCRIPTION_WORKER", "1") != "0":
        from datatong.exchange import delivery

        delivery.start_thread(settings)  # change capture and subscription delivery
    uvicorn.run(app_, host=host, port=port, log_level="info")


def _warm_search_index(url: str) -> None:
    """Load the in-memory search index in the background, so the first searches on a
    large catalog do not wait for it (they use SQL until it is ready)."""
    import threading

    from datatong.catalog import search
    from datatong.db import session_scope

    def run() -> None:
        try:
            with session_scope(url) as session:
                seconds = search.warm(session)
            console.print(f"检索索引已加载（{seconds:.1f} 秒）")
        except Exception as exc:  # the SQL path still answers; say why the index did not load
            console.print(f"[yellow]检索索引未能预加载[/yellow]：{type(exc).__name__}")

    threading.Thread(target=run, name="search-warmup", daemon=True).start()


@app.command()
def demo(
    port: int = 8000,
    host: str = "127.0.0.1",
    entries: int = 2000,
    serve_: bool = typer.Option(True, "--serve/--no-serve", help="生成数据后是否启动服务"),
) -> None:
    """生成一座虚构城市的演示数据（约 30 个部门、2000 条目录、各角色用户）并启动服务。"""
    from datatong.demo import seed_demo

    # The demo keeps working when a deadline reaches a year whose holidays nobody entered
    # yet: it counts weekends only and marks such due dates 暂估 (a deployment decides).
    os.environ.setdefault("DATATONG_CALENDAR_FALLBACK", "weekends")
    settings = _settings()
    seed_demo(settings, entries=entries, console=console, url=f"http://{host}:{port}")
    if serve_:
        serve(host=host, port=port)


@bench_app.command("catalog")
def bench_catalog(
    entries: int = typer.Option(470_000, help="生成的目录条数"),
    database_url: str = typer.Option(None, help="数据库 URL；默认为临时 SQLite 文件"),
    searches: int = typer.Option(500, help="检索次数"),
) -> None:
    """目录导入与检索基准：输出一个 JSON 对象。"""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.catalog import run

    result = run(entries=entries, database_url=database_url, searches=searches, console=console)
    print(json.dumps(result, ensure_ascii=False))


@bench_app.command("audit")
def bench_audit(
    records: int = typer.Option(10_000_000, help="校验基准的审计链长度"),
    database_url: str = typer.Option(None, help="数据库 URL；默认为临时 SQLite 文件"),
    seconds: float = typer.Option(10.0, help="每轮压测秒数"),
    connections: int = typer.Option(32, help="并发连接数"),
) -> None:
    """审计开销与审计链校验基准：输出一个 JSON 对象。"""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.audit import run

    result = run(records=records, database_url=database_url, seconds=seconds, connections=connections, console=console)
    print(json.dumps(result, ensure_ascii=False))


@bench_app.command("authorize")
def bench_authorize(
    grants: int = typer.Option(100_000, help="数据库中的授权条数"),
    database_url: str = typer.Option(None, help="数据库 URL；默认为临时 SQLite 文件"),
    seconds: float = typer.Option(10.0, help="热缓存判定的计时秒数（基线为其一半）"),
    threads: int = typer.Option(4, help="并发调用的线程数（如服务器的工作线程）"),
) -> None:
    """授权判定（authorize）冷/热吞吐与主键查询基线：输出一个 JSON 对象。"""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.authorize import run

    result = run(grants=grants, database_url=database_url, seconds=seconds, threads=threads, console=console)
    print(json.dumps(result, ensure_ascii=False))


@bench_app.command("exchange")
def bench_exchange(
    database_url: str = typer.Option(None, help="平台数据库 URL（PostgreSQL 服务器）；默认为临时 SQLite 文件"),
    only: str = typer.Option("verify,bulk,subscriptions", help="要运行的部分，逗号分隔"),
    seconds: float = typer.Option(10.0, help="核验压测每轮秒数"),
    connections: int = typer.Option(32, help="核验压测并发连接数"),
    workers: int = typer.Option(1, help="被测服务的进程数"),
    rows: int = typer.Option(10_000_000, help="批量导出基准的表行数"),
    changes: int = typer.Option(20_000, help="订阅基准的变更条数"),
) -> None:
    """数据交换基准（查询核验、批量导出、订阅推送）：输出一个 JSON 对象。"""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.exchange import run

    parts = [p.strip() for p in only.split(",") if p.strip()]
    result = run(
        database_url,
        console,
        parts=parts,
        seconds=seconds,
        connections=connections,
        workers=workers,
        rows=rows,
        changes=changes,
    )
    print(json.dumps(result, ensure_ascii=False))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
