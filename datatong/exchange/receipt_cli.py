"""``datatong receipt verify``: prove what an exchange response said, later, with only
the platform's public keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

receipt_app = typer.Typer(help="交换电子凭证（签名回执）", no_args_is_help=True)
console = Console(stderr=True)


def _jwks(source: str | None) -> Any:
    """The verification keys: a JWKS file, a JWKS URL (``/.well-known/datatong-keys``)
    or, without either, this installation's own key directory."""
    if source is None:
        from datatong.settings import get_settings

        return get_settings().keys_path
    if source.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(source, timeout=10, follow_redirects=False)
        response.raise_for_status()
        return response.json()
    return json.loads(Path(source).read_text(encoding="utf-8"))


def _inputs(file: Path | None, receipt: str | None, body: Path | None) -> tuple[str, bytes]:
    if file is not None:
        doc = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("receipt"), str) or "body_file" not in doc:
            raise ValueError('FILE must be JSON {"receipt": "<X-Datatong-Receipt>", "body_file": "response.json"}')
        body_path = Path(doc["body_file"])
        if not body_path.is_absolute():
            body_path = file.parent / body_path
        return doc["receipt"], body_path.read_bytes()
    if receipt is None or body is None:
        raise ValueError("give FILE, or both --receipt and --body")
    return receipt, body.read_bytes()


@receipt_app.command("verify")
def verify(
    file: Path = typer.Argument(
        None, help='JSON 文件 {"receipt": "<X-Datatong-Receipt 头>", "body_file": "response.json"}'
    ),
    receipt: str = typer.Option(None, "--receipt", help="X-Datatong-Receipt 响应头的值"),
    body: Path = typer.Option(None, "--body", help="收到的响应体（原样字节）"),
    jwks: str = typer.Option(
        None, "--jwks", help="平台公钥集：文件或 URL（…/.well-known/datatong-keys）；默认本机密钥目录"
    ),
) -> None:
    """校验电子凭证：签名、响应体哈希与密钥 ID；通过时打印凭证内容，否则退出码 1。"""
    from datatong.exchange.receipts import ReceiptInvalid, verify_receipt

    try:
        header, data = _inputs(file, receipt, body)
        keys = _jwks(jwks)
        claims = verify_receipt(header, data, keys)
    except ReceiptInvalid as exc:
        console.print(f"[red]FAILED 电子凭证无效[/red] {exc.message}（{exc.code}）")
        print(json.dumps({"ok": False, "code": exc.code, "message": exc.message_en}, ensure_ascii=False))
        raise typer.Exit(1) from None
    except (OSError, ValueError) as exc:
        console.print(f"[red]FAILED[/red] {exc}")
        print(json.dumps({"ok": False, "code": "receipt.input", "message": str(exc)}, ensure_ascii=False))
        raise typer.Exit(1) from None
    console.print(f"[green]OK 电子凭证有效[/green] kid={claims.kid} time={claims.time}")
    print(json.dumps({"ok": True, "claims": claims.as_dict()}, ensure_ascii=False, indent=2))
