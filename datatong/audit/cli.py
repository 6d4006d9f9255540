"""``datatong audit …`` and ``datatong keys …``: verify the trail, sign a checkpoint,
show and rotate the platform keys."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

audit_app = typer.Typer(help="审计日志（防篡改哈希链）", no_args_is_help=True)
keys_app = typer.Typer(help="平台签名密钥", no_args_is_help=True)
console = Console(stderr=True)


def _settings():  # type: ignore[no-untyped-def]
    from datatong.settings import get_settings

    return get_settings()


def _keys(jwks_file: Path | None, key_dir: Path) -> dict:  # type: ignore[type-arg]
    from datatong.keys import keyring, verify_keys_from_jwks

    if jwks_file is not None:
        return verify_keys_from_jwks(json.loads(jwks_file.read_text(encoding="utf-8")))
    return {k.kid: k for k in keyring(key_dir)}


@audit_app.command("verify")
def verify(
    from_: int = typer.Option(1, "--from", help="从第几条记录开始校验"),
    jwks: Path = typer.Option(None, help="用已发布的公钥集（/.well-known/datatong-keys 的内容）校验签名"),
    workers: int = typer.Option(0, help="并行进程数；0 为自动"),
    database_url: str = typer.Option(None, help="数据库 URL；默认取 DATATONG_DATABASE_URL"),
) -> None:
    """重算哈希链并校验签名检查点；被篡改时指出第一条有问题的记录，退出码非零。"""
    from datatong.audit.verify import verify as run_verify

    settings = _settings()
    url = database_url or settings.database_url
    keys = _keys(jwks, settings.keys_path)
    columns = (TextColumn("校验审计链"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("verify", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = run_verify(url, keys, start=from_, workers=workers or None, progress=progress)
    if report.ok:
        console.print(
            f"[green]OK[/green] 审计链完整：校验 {report.records} 条记录（#{report.first_seq}–#{report.last_seq}），"
            f"{report.checkpoints} 个签名检查点，最后检查点 #{report.last_checkpoint}"
        )
        for warning in report.warnings:
            console.print(f"[yellow]提示[/yellow] {warning}")
        return
    problem = report.problem
    assert problem is not None
    console.print(f"[red]审计链被篡改[/red] 第一条有问题的记录：#{problem.seq}（{problem.code}）")
    console.print(f"  {problem.message}")
    console.print(f"  {problem.message_en}")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """立即为当前链尾签名一个检查点（服务运行时也会定期自动签名）。"""
    from datatong.audit.checkpoint import make_checkpoint
    from datatong.db import engine_for

    settings = _settings()
    with engine_for(settings.database_url).begin() as conn:
        seq = make_checkpoint(conn, settings.keys_path)
    console.print(f"已签名检查点 #{seq}" if seq else "链尾已有检查点，无需签名")


@keys_app.command("show")
def keys_show() -> None:
    """打印平台公钥集（JWKS），即 /.well-known/datatong-keys 的内容。"""
    from datatong.keys import jwks

    print(json.dumps(jwks(_settings().keys_path), ensure_ascii=False, indent=2))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """生成新的签名密钥；旧密钥保留用于校验既有签名。"""
    from datatong.keys import new_key

    key = new_key(_settings().keys_path)
    console.print(f"新签名密钥 {key.kid}")


@keys_app.command("rotate-data-key")
def keys_rotate_data() -> None:
    """生成新的数据加密密钥（保护 TOTP 密钥等）；旧密钥保留以便解密既有数据。"""
    from datatong.crypto import rotate_data_key

    kid = rotate_data_key(_settings().keys_path)
    console.print(f"新数据加密密钥 {kid}；请重启各 API 进程")
