"""Sharing policy the platform admin changes at run time: the masking rules (脱敏规则).

Stored as JSON in the ``security_policy`` table (like the 符合性审查 switch); read through
a small per-process cache so that masking every exchanged row costs no query. A change in
this process is seen at once; other processes see it within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.errors import invalid
from datatong.orgs.models import Role, SecurityPolicy
from datatong.orgs.service import Principal, require_platform_admin, require_role
from datatong.sharing import masking

MASKING_KEY = "sharing_masking_rules"
CACHE_SECONDS = 5.0

_lock = threading.Lock()
_cache: tuple[float, dict[str, masking.MaskRule], dict[str, dict[str, Any]]] | None = None


def _stored(session: Session) -> dict[str, dict[str, Any]]:
    row = session.get(SecurityPolicy, MASKING_KEY)
    return masking.validate_config(json.loads(row.value)) if row is not None else {}


def masking_rules(session: Session) -> dict[str, masking.MaskRule]:
    """The rules table in force: pass it as ``rules=`` to masking.mask / mask_row."""
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    config = _stored(session)
    rules = masking.rules_from_config(config)
    with _lock:
        _cache = (now, rules, config)
    return rules


def masking_table(session: Session, principal: Principal) -> list[dict[str, Any]]:
    """Every kind with its label, mode and what it keeps (for the admin page and API)."""
    require_role(principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN, Role.DATA_OFFICER, Role.AUDITOR)
    config = _stored(session)
    rules = masking.rules_from_config(config)
    return [
        {
            "kind": kind,
            "label": rules[kind].label,
            "mode": config.get(kind, {}).get("mode", "default"),
            "head": config.get(kind, {}).get("head"),
            "tail": config.get(kind, {}).get("tail"),
            "description": rules[kind].description,
            "example": _EXAMPLES.get(kind) and masking.mask(kind, _EXAMPLES[kind], rules),
        }
        for kind in masking.KINDS
        if kind != "none"
    ]


_EXAMPLES = {
    "id_card": "110101199003071234",
    "phone": "13812345678",
    "name": "欧阳小明",
    "address": "北京市朝阳区建国路88号3号楼",
    "text": "申请人因病申请临时救助",
    "bank_card": "6222020200112233445",
    "email": "zhangsan@example.gov.cn",
}


def set_masking_rules(session: Session, principal: Principal, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Replace the configured rules (kinds left out go back to their built-in rule); audited."""
    global _cache
    require_platform_admin(principal)
    try:
        clean = masking.validate_config(config)
    except masking.MaskConfigError as exc:
        raise invalid("sharing.masking_invalid", exc.message, exc.message_en, "rules") from None
    clean = {k: v for k, v in clean.items() if v["mode"] != "default"}
    before = _stored(session)
    row = session.get(SecurityPolicy, MASKING_KEY)
    if row is None:
        row = SecurityPolicy(key=MASKING_KEY, value="{}")
        session.add(row)
    row.value = json.dumps(clean, ensure_ascii=False, sort_keys=True)
    row.updated_by = principal.username
    session.flush()
    record(session, principal, "sharing.masking.update", resource="masking_rules", detail={"from": before, "to": clean})
    with _lock:
        _cache = None
    return masking_table(session, principal)
