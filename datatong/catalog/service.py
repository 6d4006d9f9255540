"""Rules of the 政务信息资源目录: create, edit, review, version, find.

Plain functions taking a session and the acting principal; the API, the CLI and
the pages all call these, so they cannot disagree.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select, text
from sqlalchemy.orm import Session

from datatong.catalog import search as fts
from datatong.catalog import vocab
from datatong.catalog.models import CatalogClass, CatalogEntry, DataItem, EntryVersion
from datatong.catalog.rules import RuleError, check_entry
from datatong.catalog.schemas import EntryIn, ItemIn
from datatong.db import get_by_id, is_sqlite, utcnow
from datatong.errors import AppError, Forbidden, NotFound, Unauthenticated, ValidationFailed, invalid
from datatong.orgs.models import Department, Role
from datatong.orgs.service import Principal, department_by_code, require_platform_admin

EDITOR_ROLES = (Role.DEPT_ADMIN, Role.DATA_OFFICER)
EDITABLE_STATUSES = ("draft", "publish_rejected", "published")
ENTRY_FIELDS = [
    "name", "class_code", "provider_code", "provider_unit", "summary", "keywords",
    "format_category", "format_type", "share_type", "share_condition", "no_share_basis",
    "share_method", "share_subtype", "is_open", "open_condition", "update_cycle",
    "release_date", "related_codes", "source_system", "online_url", "service_info",
    "metadata_maintainer",
]
FIELD_LABELS = {
    "name": "信息资源名称", "class_code": "信息资源分类", "provider_code": "提供方代码",
    "provider_unit": "提供方内部部门", "summary": "摘要", "keywords": "关键字",
    "format_category": "信息资源格式分类", "format_type": "信息资源格式类型",
    "share_type": "共享类型", "share_condition": "共享条件", "no_share_basis": "不予共享依据",
    "share_method": "共享方式", "share_subtype": "共享方式子类", "is_open": "是否向社会开放",
    "open_condition": "开放条件", "update_cycle": "更新周期", "release_date": "发布日期",
    "related_codes": "关联资源代码", "source_system": "来源信息系统", "online_url": "在线资源链接",
    "service_info": "服务信息", "metadata_maintainer": "元数据维护方", "items": "信息项",
}
ITEM_FIELDS = ["code", "data_type", "length", "description", "sensitivity", "is_authoritative"]
ITEM_LABELS = {"code": "代码", "data_type": "数据类型", "length": "长度", "description": "描述",
               "sensitivity": "敏感级别", "is_authoritative": "权威来源"}

# Life cycle (SPEC §1): action -> (allowed from, to, who, reason required)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str, bool]] = {
    "submit": (("draft", "publish_rejected"), "pending_publish", "editor", False),
    "approve_publish": (("pending_publish",), "published", "admin", False),
    "reject_publish": (("pending_publish",), "publish_rejected", "admin", True),
    "request_revoke": (("published",), "pending_revoke", "editor", True),
    "approve_revoke": (("pending_revoke",), "revoked", "admin", False),
    "reject_revoke": (("pending_revoke",), "published", "admin", True),
}
ACTION_LABELS = {
    "create": "创建", "update": "修改", "submit": "提交发布审核", "approve_publish": "审核通过并发布",
    "reject_publish": "驳回发布", "request_revoke": "申请撤销", "approve_revoke": "同意撤销",
    "reject_revoke": "驳回撤销", "import": "批量导入",
}


# ---------------------------------------------------------------- classification


def seed_classes(session: Session) -> None:
    """Create the standard classification where it is missing (idempotent)."""
    existing = set(session.scalars(select(CatalogClass.code)))
    for type_code, (type_name, _names) in vocab.SEED_CLASSES.items():
        if type_code not in existing:
            session.add(CatalogClass(code=type_code, name=type_name, level=1))
    session.flush()
    for type_code, (_, names) in vocab.SEED_CLASSES.items():
        parent = session.scalar(select(CatalogClass).where(CatalogClass.code == type_code))
        assert parent is not None
        for i, name in enumerate(names, start=1):
            code = f"{type_code}{i:02d}"
            if code not in existing:
                session.add(CatalogClass(code=code, name=name, level=2, parent_id=parent.id))
    session.flush()


def list_classes(session: Session) -> list[CatalogClass]:
    return list(session.scalars(select(CatalogClass).order_by(CatalogClass.code)))


def class_by_code(session: Session, code: str) -> CatalogClass:
    cls = session.scalar(select(CatalogClass).where(CatalogClass.code == (code or "").strip()))
    if cls is None:
        raise invalid("catalog.class_unknown", f"信息资源分类 {code} 不存在",
                      f"Unknown classification code {code}", "class_code")
    return cls


def _parent_of(session: Session, code: str) -> tuple[CatalogClass | None, int]:
    """The parent class of a full code and the level the code would have."""
    if not code.isdigit():
        raise invalid("catalog.class_code_invalid", "分类代码只能由数字组成",
                      "Classification codes are digits only", "code")
    if len(code) == 1:
        return None, 1
    prefix_len = {2: 1, 3: 1, 4: 3, 5: 3, 6: 3}.get(len(code), 6)
    # 类 1 digit, 项 2 more, 目 3 more, 细目 anything after the 6th digit.
    level = 2 if len(code) == 3 else 3 if len(code) == 6 else 4 if len(code) > 6 else 0
    if level == 0:
        raise invalid("catalog.class_code_invalid",
                      "分类代码由 类(1位)+项(2位)+目(3位)+细目(若干位) 组成",
                      "A class code is 1 + 2 + 3 digits, then any number for 细目", "code")
    parent = session.scalar(select(CatalogClass).where(CatalogClass.code == code[:prefix_len]))
    if parent is None:
        raise invalid("catalog.class_parent_missing", f"上级分类 {code[:prefix_len]} 不存在",
                      f"Parent class {code[:prefix_len]} does not exist", "code")
    return parent, level


def create_class(session: Session, principal: Principal, code: str, name: str,
                 description: str | None = None, department_id: int | None = None) -> CatalogClass:
    require_platform_admin(principal)
    code = (code or "").strip()
    if not (name or "").strip():
        raise invalid("catalog.class_name_required", "请填写分类名称", "Class name is required", "name")
    if session.scalar(select(CatalogClass.id).where(CatalogClass.code == code)):
        raise invalid("catalog.class_code_taken", f"分类代码 {code} 已存在",
                      f"Class code {code} exists", "code")
    parent, level = _parent_of(session, code)
    cls = CatalogClass(code=code, name=name.strip(), level=level,
                       parent_id=parent.id if parent else None, description=description,
                       department_id=department_id)
    session.add(cls)
    session.flush()
    return cls


def update_class(session: Session, principal: Principal, class_id: int, name: str | None,
                 description: str | None) -> CatalogClass:
    require_platform_admin(principal)
    cls = get_by_id(session, CatalogClass, class_id)
    if cls is None:
        raise NotFound("分类", "Class")
    if name is not None:
        if not name.strip():
            raise invalid("catalog.class_name_required", "请填写分类名称", "Class name is required", "name")
        cls.name = name.strip()
    if description is not None:
        cls.description = description
    session.flush()
    return cls


# ---------------------------------------------------------------- codes


def next_code(session: Session, class_code: str, provider_code: str) -> str:
    """信息资源代码 = 分类代码 + "-" + 提供方代码 + "-" + 6-digit sequence.

    The sequence per (class, provider) lives in ``code_sequence`` and only grows
    (an atomic upsert, safe under concurrent writers), so no code is handed out
    twice; a code taken by an imported entry is skipped.
    """
    prefix = f"{class_code}-{provider_code}"
    while True:
        seq = session.execute(
            text(
                "INSERT INTO code_sequence(prefix, last) VALUES (:p, 1) "
                "ON CONFLICT (prefix) DO UPDATE SET last = code_sequence.last + 1 RETURNING last"
            ),
            {"p": prefix},
        ).scalar_one()
        code = f"{prefix}-{seq:06d}"
        if not session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == code)):
            return code


def reserve_codes(session: Session, prefix: str, count: int) -> int:
    """Reserve ``count`` sequence numbers at once; returns the first."""
    last = session.execute(
        text(
            "INSERT INTO code_sequence(prefix, last) VALUES (:p, :n) "
            "ON CONFLICT (prefix) DO UPDATE SET last = code_sequence.last + :n RETURNING last"
        ),
        {"p": prefix, "n": count},
    ).scalar_one()
    return int(last) - count + 1


# ---------------------------------------------------------------- permissions


def can_edit(principal: Principal, entry: CatalogEntry | None = None, provider_id: int | None = None) -> bool:
    pid = entry.provider_id if entry is not None else provider_id
    if principal.is_platform_admin:
        return True
    return (principal.kind == "user" and principal.role in EDITOR_ROLES
            and principal.department_id == pid)


def can_view(principal: Principal, entry: CatalogEntry, anonymous_catalog: str = "open") -> bool:
    if principal.is_platform_admin:
        return True
    if principal.is_authenticated:
        return entry.status == "published" or entry.provider_id == principal.department_id
    if anonymous_catalog == "published":
        return entry.status == "published"
    if anonymous_catalog == "open":
        return entry.status == "published" and entry.is_open
    return False


def may_see_no_share_basis(principal: Principal, entry: CatalogEntry) -> bool:
    """Why a resource is not shared is for the operator and the provider only (SPEC §3)."""
    return principal.is_platform_admin or (
        principal.is_authenticated and principal.department_id == entry.provider_id)


def visibility_clause(principal: Principal, anonymous_catalog: str = "open") -> Any:
    if principal.is_platform_admin:
        return None
    published = CatalogEntry.status == "published"
    if principal.is_authenticated:
        return or_(published, CatalogEntry.provider_id == principal.department_id)
    if anonymous_catalog == "published":
        return published
    if anonymous_catalog == "open":
        return and_(published, CatalogEntry.is_open.is_(True))
    raise Unauthenticated()


# ---------------------------------------------------------------- read


def get_entry(session: Session, principal: Principal, entry_id: int,
              anonymous_catalog: str = "open") -> CatalogEntry:
    entry = get_by_id(session, CatalogEntry, entry_id)
    # An entry the caller may not see is reported as missing: its existence is
    # itself information another department has not published.
    if entry is None or not can_view(principal, entry, anonymous_catalog):
        raise NotFound("信息资源", "Catalog entry")
    return entry


def get_entry_by_code(session: Session, principal: Principal, code: str,
                      anonymous_catalog: str = "open") -> CatalogEntry:
    entry_id = session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == code))
    if entry_id is None:
        raise NotFound("信息资源", "Catalog entry")
    return get_entry(session, principal, entry_id, anonymous_catalog)


def list_versions(session: Session, principal: Principal, entry_id: int) -> list[EntryVersion]:
    entry = get_entry(session, principal, entry_id)
    versions = list(session.scalars(
        select(EntryVersion).where(EntryVersion.entry_id == entry_id).order_by(EntryVersion.version.desc())
    ))
    if may_see_no_share_basis(principal, entry):
        return versions
    return [_without_no_share_basis(v) for v in versions]


def latest_reasons(session: Session, entry_ids: list[int]) -> dict[int, str | None]:
    """The reason given with each entry's latest step (why it awaits review)."""
    if not entry_ids:
        return {}
    rows = session.execute(
        select(EntryVersion.entry_id, EntryVersion.reason)
        .where(EntryVersion.entry_id.in_(entry_ids))
        .order_by(EntryVersion.entry_id, EntryVersion.version.desc())
    )
    reasons: dict[int, str | None] = {}
    for entry_id, reason in rows:
        reasons.setdefault(entry_id, reason)
    return reasons


def _without_no_share_basis(v: EntryVersion) -> EntryVersion:
    """A detached copy (never added to the session) with the 不予共享依据 change left out."""
    return EntryVersion(
        id=v.id, entry_id=v.entry_id, version=v.version, action=v.action, status=v.status, actor_id=v.actor_id,
        actor_name=v.actor_name, reason=v.reason, created_at=v.created_at,
        changes=[c for c in v.changes if c.get("field") != "no_share_basis"],
    )


# ---------------------------------------------------------------- write


def _raise_rules(errors: list[RuleError]) -> None:
    if errors:
        first = errors[0]
        raise ValidationFailed(first.code, first.message, first.message_en, field=first.field,
                               details=[e.as_dict() for e in errors])


def _normalise(data: EntryIn) -> EntryIn:
    """Fill what the rules allow to default: fixed widths, the default share method."""
    items = []
    for item in data.items:
        length = item.length or vocab.FIXED_LENGTH.get(item.data_type)
        items.append(item.model_copy(update={"name": item.name.strip(), "length": length,
                                             "data_type": item.data_type.strip().upper()}))
    updates: dict[str, Any] = {"items": items, "name": data.name.strip(), "class_code": data.class_code.strip()}
    if data.share_type == "none":
        updates.update(share_method=None, share_subtype=None)
    return data.model_copy(update=updates)


def _resolve_provider(session: Session, principal: Principal, data: EntryIn) -> Department:
    if data.provider_code and data.provider_code != principal.department_code:
        if not principal.is_platform_admin:
            raise Forbidden("只能为本部门编目", "You may catalogue only your own department's resources")
        return department_by_code(session, data.provider_code)
    if principal.department_id is None:
        raise invalid("department.required", "请指定提供方", "A provider is required", "provider_code")
    dept = session.get(Department, principal.department_id)
    assert dept is not None
    return dept


def _check_class(session: Session, class_code: str) -> CatalogClass:
    cls = class_by_code(session, class_code)
    if cls.level < 2:
        raise invalid("catalog.class_too_broad", "请选择到“项”或更细的分类",
                      "Choose a class at 项 level or finer", "class_code")
    return cls


def _apply(entry: CatalogEntry, data: EntryIn, cls: CatalogClass, provider: Department) -> None:
    for name in ENTRY_FIELDS:
        if name in ("class_code", "provider_code"):
            continue
        setattr(entry, name, getattr(data, name))
    entry.class_id = cls.id
    entry.class_code = cls.code
    entry.catalog_type = cls.code[0]
    entry.provider_id = provider.id
    entry.provider_code = provider.code
    entry.metadata_updated_at = date.today()
    entry.modified_at = utcnow()
    entry.items = [DataItem(position=i, **item.model_dump()) for i, item in enumerate(data.items)]


def snapshot(entry: CatalogEntry) -> dict[str, Any]:
    snap: dict[str, Any] = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    snap["release_date"] = entry.release_date.isoformat() if entry.release_date else None
    snap["items"] = [{"name": i.name, **{f: getattr(i, f) for f in ITEM_FIELDS}} for i in entry.items]
    return snap


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-level changes between two snapshots; items are matched by name."""
    changes: list[dict[str, Any]] = []
    for name in ENTRY_FIELDS:
        if old.get(name) != new.get(name):
            changes.append({"field": name, "label": FIELD_LABELS[name], "old": old.get(name), "new": new.get(name)})
    old_items = {i["name"]: i for i in old.get("items", [])}
    new_items = {i["name"]: i for i in new.get("items", [])}
    for name, item in new_items.items():
        if name not in old_items:
            changes.append({"field": f"items.{name}", "label": f"信息项“{name}”", "old": None, "new": item})
            continue
        for f in ITEM_FIELDS:
            if old_items[name].get(f) != item.get(f):
                changes.append({"field": f"items.{name}.{f}", "label": f"信息项“{name}”的{ITEM_LABELS[f]}",
                                "old": old_items[name].get(f), "new": item.get(f)})
    for name, item in old_items.items():
        if name not in new_items:
            changes.append({"field": f"items.{name}", "label": f"信息项“{name}”", "old": item, "new": None})
    return changes


def _record_version(session: Session, entry: CatalogEntry, principal: Principal, action: str,
                    reason: str | None, changes: list[dict[str, Any]]) -> None:
    session.add(EntryVersion(entry_id=entry.id, version=entry.version, action=action, status=entry.status,
                             actor_id=principal.id if principal.kind == "user" else None,
                             actor_name=principal.display_name, reason=reason, changes=changes))


def _reindex(session: Session, entry: CatalogEntry) -> None:
    title, body = fts.documents(entry.name, entry.provider.name if entry.provider else "",
                                entry.summary, entry.keywords, [i.name for i in entry.items])
    fts.index_rows(session, [{"id": entry.id, "title": title, "body": body}])


def create_entry(session: Session, principal: Principal, data: EntryIn, reason: str | None = None) -> CatalogEntry:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if not (principal.is_platform_admin or principal.role in EDITOR_ROLES):
        raise Forbidden("只有数据管理员、部门管理员或平台管理员可以编目",
                        "Only data officers and admins may create entries")
    provider = _resolve_provider(session, principal, data)
    data = _normalise(data)
    _raise_rules(check_entry(data))
    cls = _check_class(session, data.class_code)
    if data.code:
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以指定信息资源代码", "Only the platform admin may set a code")
        if session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == data.code)):
            raise invalid("catalog.code_taken", f"信息资源代码 {data.code} 已被使用",
                          f"Code {data.code} is taken", "code")
        code = data.code
    else:
        code = next_code(session, cls.code, provider.code)
    entry = CatalogEntry(code=code, status="draft", version=1, created_by_id=principal.id
                         if principal.kind == "user" else None)
    _apply(entry, data, cls, provider)
    entry.provider = provider
    session.add(entry)
    session.flush()
    _record_version(session, entry, principal, "create", reason, [])
    _reindex(session, entry)
    session.flush()
    return entry


def update_entry(session: Session, principal: Principal, entry_id: int, data: EntryIn,
                 reason: str | None) -> CatalogEntry:
    entry = get_entry(session, principal, entry_id)
    if not can_edit(principal, entry):
        raise Forbidden("只能修改本部门的信息资源", "You may edit only your own department's entries")
    if entry.status not in EDITABLE_STATUSES:
        raise invalid("catalog.not_editable",
                      f"“{vocab.STATUSES[entry.status]}”状态的信息资源不能修改",
                      f"An entry in state {entry.status} cannot be edited", "status")
    if not (reason or "").strip():
        raise invalid("catalog.reason_required", "请填写修改原因", "A reason for the change is required", "reason")
    data = _normalise(data.model_copy(update={"provider_code": entry.provider_code}))
    _raise_rules(check_entry(data))
    cls = _check_class(session, data.class_code)
    before = snapshot(entry)
    _apply(entry, data, cls, entry.provider)
    changes = diff(before, snapshot(entry))
    if not changes:
        raise invalid("catalog.no_change", "没有任何修改", "Nothing changed", None)
    entry.version += 1
    session.flush()
    _record_version(session, entry, principal, "update", reason.strip() if reason else None, changes)
    _reindex(session, entry)
    session.flush()
    return entry


def transition(session: Session, principal: Principal, entry_id: int, action: str,
               reason: str | None = None) -> CatalogEntry:
    """Move an entry through its life cycle; reviews belong to the platform admin."""
    if action not in TRANSITIONS:
        raise invalid("catalog.action_unknown", f"未知操作 {action}", f"Unknown action {action}", "action")
    sources, target, who, needs_reason = TRANSITIONS[action]
    entry = get_entry(session, principal, entry_id)
    if who == "admin" and not principal.is_platform_admin:
        raise Forbidden("只有平台管理员可以审核", "Only the platform admin reviews entries")
    if who == "editor" and not can_edit(principal, entry):
        raise Forbidden("只能操作本部门的信息资源", "You may act only on your own department's entries")
    if entry.status not in sources:
        raise AppError("catalog.transition_invalid",
                       f"“{vocab.STATUSES[entry.status]}”状态的信息资源不能执行“{ACTION_LABELS[action]}”",
                       f"Cannot {action} an entry in state {entry.status}", field="status", status_code=409)
    if needs_reason and not (reason or "").strip():
        raise invalid("catalog.reason_required", "请填写理由", "A reason is required", "reason")
    old = entry.status
    entry.status = target
    if target == "published" and entry.release_date is None:
        entry.release_date = date.today()
    entry.modified_at = utcnow()
    entry.version += 1
    session.flush()
    _record_version(session, entry, principal, action, (reason or "").strip() or None,
                    [{"field": "status", "label": "状态", "old": old, "new": target}])
    session.flush()
    return entry


def review(session: Session, principal: Principal, entry_id: int, decision: str, reason: str | None) -> CatalogEntry:
    """The platform admin's decision on whatever the entry awaits (publication or revocation)."""
    entry = get_entry(session, principal, entry_id)
    if decision not in ("approve", "reject"):
        raise invalid("catalog.decision_invalid", "审核结论须为 approve（通过）或 reject（驳回）",
                      "Decision must be approve or reject", "decision")
    kind = {"pending_publish": "publish", "pending_revoke": "revoke"}.get(entry.status)
    if kind is None:
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以审核", "Only the platform admin reviews entries")
        raise AppError("catalog.transition_invalid", "该信息资源当前没有待审核的事项",
                       "Nothing is awaiting review on this entry", field="status", status_code=409)
    return transition(session, principal, entry_id, f"{decision}_{kind}", reason)


# ---------------------------------------------------------------- bulk import


@dataclass
class ImportResult:
    created: int = 0
    codes: list[str] = field(default_factory=list)


def check_import(session: Session, principal: Principal, entries: list[EntryIn]) -> list[list[RuleError]]:
    """Per entry, every rule it breaks, including the ones needing the database."""
    classes = {c.code: c for c in session.scalars(select(CatalogClass))}
    depts = set(session.scalars(select(Department.code)))
    given = [e.code for e in entries if e.code]
    taken = set(session.scalars(select(CatalogEntry.code).where(CatalogEntry.code.in_(given)))) if given else set()
    seen: set[str] = set()
    out: list[list[RuleError]] = []
    for e in entries:
        errs = check_entry(_normalise(e))
        cls = classes.get(e.class_code.strip())
        if cls is None:
            errs.append(RuleError("catalog.class_unknown", "class_code", f"信息资源分类 {e.class_code} 不存在",
                                  f"Unknown classification code {e.class_code}"))
        elif cls.level < 2:
            errs.append(RuleError("catalog.class_too_broad", "class_code", "请选择到“项”或更细的分类",
                                  "Choose a class at 项 level or finer"))
        prov = e.provider_code or principal.department_code
        if prov not in depts:
            errs.append(RuleError("department.unknown", "provider_code", f"提供方代码 {prov} 不存在",
                                  f"Unknown provider code {prov}"))
        elif prov != principal.department_code and not principal.is_platform_admin:
            errs.append(RuleError("forbidden", "provider_code", "只能导入本部门的信息资源",
                                  "You may import only your own department's entries"))
        if e.code:
            if not principal.is_platform_admin:
                errs.append(RuleError("forbidden", "code", "只有平台管理员可以指定信息资源代码",
                                      "Only the platform admin may set a code"))
            elif e.code in taken or e.code in seen:
                errs.append(RuleError("catalog.code_taken", "code", f"信息资源代码 {e.code} 已被使用",
                                      f"Code {e.code} is taken"))
            seen.add(e.code)
        out.append(errs)
    return out


def require_editor(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if not (principal.is_platform_admin or principal.role in EDITOR_ROLES):
        raise Forbidden("只有数据管理员、部门管理员或平台管理员可以编目",
                        "Only data officers and admins may create entries")


# ---------------------------------------------------------------- search
# Answered by the in-memory index of search.py when it can (counts and facets of huge
# matches in a few milliseconds), else by SQL; both give the same answer. Relevance is
# "most query words in the name first, then newest first": a ranking both paths can
# compute exactly, for any number of matches, and the one catalog users expect (a
# resource named after the words beats one that mentions them in a data item).


@dataclass
class SearchParams:
    q: str = ""
    provider: str | None = None
    class_code: str | None = None
    share_type: str | None = None
    update_cycle: str | None = None
    format: str | None = None
    open: bool | None = None
    status: str | None = None
    modified_since: datetime | None = None
    sort: str = "relevance"
    limit: int = 20
    cursor: str | None = None
    offset: int | None = None  # only for CKAN's start=; keyset pagination is preferred
    facets: bool = True


@dataclass
class SearchResult:
    total: int
    entries: list[CatalogEntry]
    next_cursor: str | None
    facets: dict[str, list[tuple[str, str, int]]]


SORTS = ("relevance", "modified", "name", "code")


@dataclass
class _Found:
    """What either search path found: the page as ids, the sort value of its last row."""

    total: int
    ids: list[int]
    last: tuple[Any, int] | None  # (sort value, entry id) for the next cursor
    more: bool
    facets: dict[str, list[tuple[str, int]]]


def _encode_cursor(sort: str, value: Any, entry_id: int) -> str:
    if isinstance(value, datetime):
        value = fts.iso(value)
    elif isinstance(value, tuple):  # relevance: (title hits, modified)
        value = [value[0], fts.iso(value[1])]
    raw = json.dumps([sort, value, entry_id], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, value, entry_id = json.loads(raw)
        if kind != sort or not isinstance(entry_id, int) or isinstance(entry_id, bool):
            raise ValueError
        if sort == "modified":
            value = datetime.fromisoformat(value)
        elif sort == "relevance":
            hits, modified = value
            if not isinstance(hits, int) or isinstance(hits, bool):
                raise ValueError
            value = (hits, datetime.fromisoformat(modified))
        elif not isinstance(value, str):
            raise ValueError
        return value, entry_id
    except (ValueError, TypeError, json.JSONDecodeError):
        raise invalid("search.cursor_invalid", "翻页游标无效，请从第一页重新查询",
                      "Invalid cursor; start again from the first page", "cursor") from None


def _filters(params: SearchParams, principal: Principal, anonymous_catalog: str) -> list[Any]:
    conds: list[Any] = []
    vis = visibility_clause(principal, anonymous_catalog)
    if vis is not None:
        conds.append(vis)
    if params.provider:
        conds.append(CatalogEntry.provider_code == params.provider)
    if params.class_code:
        conds.append(CatalogEntry.class_code.startswith(params.class_code, autoescape=True))
    if params.share_type:
        conds.append(CatalogEntry.share_type == params.share_type)
    if params.update_cycle:
        conds.append(CatalogEntry.update_cycle == params.update_cycle)
    if params.format:
        conds.append(CatalogEntry.format_category == params.format)
    if params.open is not None:
        conds.append(CatalogEntry.is_open.is_(params.open))
    if params.status:
        conds.append(CatalogEntry.status == params.status)
    if params.modified_since is not None:
        conds.append(CatalogEntry.modified_at >= params.modified_since)
    return conds


def search(session: Session, principal: Principal, params: SearchParams,
           anonymous_catalog: str = "open") -> SearchResult:
    if params.sort not in SORTS:
        raise invalid("search.sort_invalid", "排序方式须为 relevance/modified/name/code",
                      "Sort must be relevance, modified, name or code", "sort")
    limit = max(1, min(params.limit, 1000))
    tokens = fts.query_tokens(params.q)
    visibility = _visibility(principal, anonymous_catalog)
    sort = params.sort if (params.sort != "relevance" or tokens) else "modified"
    after = _decode_cursor(params.cursor, sort) if params.cursor else None
    found = _search_index(session, params, tokens, visibility, sort, after, limit)
    if found is None:
        found = _search_sql(session, principal, params, tokens, sort, after, limit, anonymous_catalog)
    entries = _load_page(session, principal, found.ids, anonymous_catalog)
    next_cursor = _encode_cursor(sort, *found.last) if found.more and found.last else None
    facets = _label_facets(session, found.facets) if params.facets else {}
    return SearchResult(found.total, entries, next_cursor, facets)


def _visibility(principal: Principal, anonymous_catalog: str) -> tuple[str, int | None]:
    """visibility_clause, as the in-memory index takes it."""
    if principal.is_platform_admin:
        return "all", None
    if principal.is_authenticated:
        return "dept", principal.department_id
    if anonymous_catalog in ("published", "open"):
        return anonymous_catalog, None
    raise Unauthenticated()


def _load_page(session: Session, principal: Principal, ids: list[int],
               anonymous_catalog: str) -> list[CatalogEntry]:
    if not ids:
        return []
    by_id = {e.id: e for e in session.scalars(select(CatalogEntry).where(CatalogEntry.id.in_(ids)))}
    # The index may lag a commit made a moment ago: never show what the caller may not see.
    return [by_id[i] for i in ids if i in by_id and can_view(principal, by_id[i], anonymous_catalog)]


# ---------------------------------------------------------------- search: in-memory index


def _search_index(session: Session, params: SearchParams, tokens: list[str],
                  visibility: tuple[str, int | None], sort: str, after: tuple[Any, int] | None,
                  limit: int) -> _Found | None:
    if params.modified_since is not None or not all(fts.SAFE_TOKEN.fullmatch(t) for t in tokens):
        return None
    query = fts.IndexQuery(
        tokens=tokens, visibility=visibility, sort=sort, limit=limit,
        provider=params.provider or None, class_prefix=params.class_code or None,
        share_type=params.share_type or None, update_cycle=params.update_cycle or None,
        format=params.format or None, open=params.open, status=params.status or None,
        after=_index_key(sort, after) if after else None, offset=params.offset or 0,
        facets=params.facets)
    hits = fts.search_index(session, query)
    if hits is None:
        return None
    last = _cursor_value(sort, hits.keys[-1], is_sqlite(session.get_bind())) if hits.keys else None
    return _Found(hits.total, hits.ids, last, hits.more, hits.facets)


def _index_key(sort: str, after: tuple[Any, int]) -> tuple[Any, ...]:
    """A cursor as the index's ascending sort key."""
    value, entry_id = after
    if sort == "modified":
        return (-fts.micros(value), -entry_id)
    if sort == "relevance":
        return (-value[0], -fts.micros(value[1]), -entry_id)
    return (value, entry_id)


def _cursor_value(sort: str, key: tuple[Any, ...], sqlite: bool) -> tuple[Any, int]:
    """The index's sort key of a row as (cursor value, entry id)."""
    if sort == "modified":
        return fts.from_micros(-key[0], naive=sqlite), -key[1]
    if sort == "relevance":
        return (-key[0], fts.from_micros(-key[1], naive=sqlite)), -key[2]
    return key[0], key[1]


# ---------------------------------------------------------------- search: SQL


def _search_sql(session: Session, principal: Principal, params: SearchParams, tokens: list[str],
                sort: str, after: tuple[Any, int] | None, limit: int,
                anonymous_catalog: str) -> _Found:
    sqlite = is_sqlite(session.get_bind())
    conds = _filters(params, principal, anonymous_catalog)
    base = select(CatalogEntry.id)
    if tokens:
        match = fts.fts_query(tokens, sqlite)
        if sqlite:
            base = base.join(fts.FTS_TABLE, fts.FTS_TABLE.c.rowid == CatalogEntry.id)
            conds.append(text("catalog_fts MATCH :fts_q").bindparams(fts_q=match))
        else:
            base = base.join(fts.PG_TABLE, fts.PG_TABLE.c.entry_id == CatalogEntry.id)
            conds.append(fts.PG_TABLE.c.tsv.op("@@")(func.to_tsquery(literal_column("'simple'"), match)))
    where = and_(*conds) if conds else None
    total = session.scalar(select(func.count()).select_from(_where(base, where).subquery())) or 0
    keys = _sql_keys(sort, tokens, sqlite)
    stmt = _where(base.add_columns(*(k for k, _ in keys)), where)
    if after:
        stmt = stmt.where(_after(keys, _key_values(sort, after)))
    stmt = stmt.order_by(*(k.desc() if desc else k for k, desc in keys)).limit(limit + 1)
    if params.offset:
        stmt = stmt.offset(params.offset)
    rows = session.execute(stmt).all()
    page = rows[:limit]
    last = _sql_cursor_value(sort, page[-1]) if page else None
    facets = _facets(session, base, where) if params.facets else {}
    return _Found(total, [r[0] for r in page], last, len(rows) > limit, facets)


def _where(stmt: Any, where: Any) -> Any:
    return stmt.where(where) if where is not None else stmt


def _sql_keys(sort: str, tokens: list[str], sqlite: bool) -> list[tuple[Any, bool]]:
    """(column, descending) of a sort, the entry id last."""
    if sort == "modified":
        return [(CatalogEntry.modified_at, True), (CatalogEntry.id, True)]
    if sort == "relevance":
        return [(_title_hits(tokens, sqlite), True), (CatalogEntry.modified_at, True),
                (CatalogEntry.id, True)]
    col = CatalogEntry.name if sort == "name" else CatalogEntry.code
    return [(col, False), (CatalogEntry.id, False)]


def _title_hits(tokens: list[str], sqlite: bool) -> Any:
    """How many of the query tokens occur in the entry's name (title column)."""
    from sqlalchemy import Integer, case, cast, column

    terms: list[Any] = []
    for i, tok in enumerate(tokens):
        expr = fts.title_query(tok, sqlite)
        if sqlite:
            sub = text(f"SELECT rowid FROM catalog_fts WHERE catalog_fts MATCH :th{i}") \
                .bindparams(**{f"th{i}": expr}).columns(column("rowid"))
            terms.append(case((CatalogEntry.id.in_(sub), 1), else_=0))
        else:
            tsq = func.to_tsquery(literal_column("'simple'"), expr)
            terms.append(cast(fts.PG_TABLE.c.tsv.op("@@")(tsq), Integer))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total.label("title_hits")


def _key_values(sort: str, after: tuple[Any, int]) -> list[Any]:
    value, entry_id = after
    return [*value, entry_id] if sort == "relevance" else [value, entry_id]


def _after(keys: list[tuple[Any, bool]], values: list[Any]) -> Any:
    """Rows after ``values`` in the order of ``keys`` (keyset pagination)."""
    alternatives = []
    for i, (col, desc) in enumerate(keys):
        equal = [k == v for (k, _), v in zip(keys[:i], values[:i], strict=True)]
        alternatives.append(and_(*equal, col < values[i] if desc else col > values[i]))
    return or_(*alternatives)


def _sql_cursor_value(sort: str, row: Any) -> tuple[Any, int]:
    if sort == "relevance":
        return (int(row[1]), row[2]), row[3]
    return row[1], row[2]


FACET_COLUMNS: dict[str, Any] = {
    "provider": CatalogEntry.provider_code,
    "class": func.substr(CatalogEntry.class_code, 1, 3),
    "share_type": CatalogEntry.share_type,
    "update_cycle": CatalogEntry.update_cycle,
    "format": CatalogEntry.format_category,
    "open": CatalogEntry.is_open,
}


def _facets(session: Session, base: Any, where: Any) -> dict[str, list[tuple[str, int]]]:
    """(value, count) per facet, most frequent first (ties by value, as the index)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name, col in FACET_COLUMNS.items():
        stmt = _where(base.with_only_columns(col.label("v"), func.count().label("n")), where).group_by(col)
        values = [(("true" if v else "false") if name == "open" else str(v), int(n))
                  for v, n in session.execute(stmt)]
        out[name] = sorted(values, key=lambda vn: (-vn[1], vn[0]))[:50]
    return out


# ---------------------------------------------------------------- search: facet labels


def _label_facets(session: Session, facets: dict[str, list[tuple[str, int]]]
                  ) -> dict[str, list[tuple[str, str, int]]]:
    """Labels of the values shown only: two small lookups instead of every department
    and class on each search."""
    providers = [v for v, _ in facets.get("provider", [])]
    classes = [v for v, _ in facets.get("class", [])]
    labels: dict[str, dict[str, str]] = {
        "provider": dict(session.execute(select(Department.code, Department.name)
                                         .where(Department.code.in_(providers))).all()) if providers else {},
        "class": dict(session.execute(select(CatalogClass.code, CatalogClass.name)
                                      .where(CatalogClass.code.in_(classes))).all()) if classes else {},
        **STATIC_FACET_LABELS,
    }
    return {name: [(v, labels[name].get(v, v), n) for v, n in values] for name, values in facets.items()}


STATIC_FACET_LABELS: dict[str, dict[str, str]] = {
    "share_type": vocab.SHARE_TYPES,
    "update_cycle": vocab.UPDATE_CYCLES,
    "format": vocab.FORMAT_CATEGORIES,
    "open": {"true": "向社会开放", "false": "不开放"},
}


def facet_labels(session: Session) -> dict[str, dict[str, str]]:
    """Every facet label (for forms listing all values)."""
    return {
        "provider": dict(session.execute(select(Department.code, Department.name)).all()),
        "class": dict(session.execute(select(CatalogClass.code, CatalogClass.name)
                                      .where(CatalogClass.level <= 2)).all()),
        **STATIC_FACET_LABELS,
    }


def entries_for_export(session: Session, principal: Principal, params: SearchParams,
                       anonymous_catalog: str = "open") -> Iterable[CatalogEntry]:
    """Every entry of a search, page by page (keyset), for export."""
    params = SearchParams(**{**params.__dict__, "facets": False, "limit": 500, "cursor": None})
    while True:
        result = search(session, principal, params, anonymous_catalog)
        yield from result.entries
        if not result.next_cursor:
            return
        params.cursor = result.next_cursor


def items_of(entries: Iterable[CatalogEntry]) -> list[ItemIn]:
    return [ItemIn.model_validate(i, from_attributes=True) for e in entries for i in e.items]


# ---------------------------------------------------------------- search: fast bulk import
# Kept with the search code because most of its cost is the index; bulk_create can
# delegate here (same arguments, same rows — tests/test_demo.py compares the two).

_ENTRY_VALUE_FIELDS = [n for n in ENTRY_FIELDS if n not in ("class_code", "provider_code", "release_date")]
_ENTRY_COLUMNS = ["id", "code", *_ENTRY_VALUE_FIELDS, "class_id", "class_code", "catalog_type",
                  "provider_id", "provider_code", "status", "version", "created_by_id", "created_at",
                  "modified_at", "metadata_updated_at", "release_date"]
_ITEM_COLUMNS = ["entry_id", "position", "name", "code", "data_type", "length", "description",
                 "sensitivity", "is_authoritative"]
_VERSION_COLUMNS = ["entry_id", "version", "action", "status", "actor_id", "actor_name", "reason",
                    "changes", "created_at"]


@dataclass
class _Coded:
    """What the code generator reads of an entry."""

    code: str | None
    class_code: str
    provider_code: str | None


def _prefix(e: _Coded | EntryIn, principal: Principal) -> str:
    return f"{e.class_code.strip()}-{e.provider_code or principal.department_code}"


def _reserve_all(session: Session, entries: list[EntryIn], principal: Principal) -> dict[str, int]:
    """The next free sequence number per code prefix, reserved for the whole import at
    once (one statement per prefix instead of one per prefix and chunk)."""
    wanted: dict[str, int] = {}
    for e in entries:
        if not e.code:
            p = _prefix(e, principal)
            wanted[p] = wanted.get(p, 0) + 1
    return {p: reserve_codes(session, p, n) for p, n in wanted.items()}


def _take_code(nxt: dict[str, int], prefix: str) -> str:
    seq = nxt[prefix]
    nxt[prefix] = seq + 1
    return f"{prefix}-{seq:06d}"


def _fast_items(e: EntryIn) -> list[tuple[Any, ...]]:
    """(name, code, type, length, description, sensitivity, authoritative) as _normalise
    would leave them: names stripped, fixed widths filled in, types upper-cased."""
    return [(i.name.strip(), i.code, i.data_type.strip().upper(),
             i.length or vocab.FIXED_LENGTH.get(i.data_type), i.description, i.sensitivity,
             i.is_authoritative) for i in e.items]


def _fast_values(e: EntryIn) -> list[Any]:
    values = [getattr(e, n) for n in _ENTRY_VALUE_FIELDS]
    values[0] = e.name.strip()
    if e.share_type == "none":  # as _normalise: no share method for what is not shared
        values[_ENTRY_VALUE_FIELDS.index("share_method")] = None
        values[_ENTRY_VALUE_FIELDS.index("share_subtype")] = None
    return values


def bulk_create(session: Session, principal: Principal, entries: list[EntryIn], *,
                     status: str = "draft", reason: str | None = None,
                     progress: Callable[[int], None] | None = None, chunk: int = 5_000,
                     keep_codes: bool = True) -> ImportResult:
    """Create many entries in the caller's transaction (all or nothing).

    Entries are checked first by ``check_import`` (the caller reports errors by row).
    Rows go through the drivers' bulk paths (executemany on SQLite, COPY on PostgreSQL)
    without ORM objects, and Python prepares a chunk while a second thread writes the
    one before, so 470,000 entries import in about a minute."""
    result = ImportResult()
    nxt = _reserve_all(session, entries, principal)
    lookup = _BulkLookup({c.code: c for c in session.scalars(select(CatalogClass))},
                         {d.code: d for d in session.scalars(select(Department))},
                         is_sqlite(session.get_bind()), utcnow())
    late: list[dict[str, Any]] = []  # index rows the database must build itself
    with fts.bulk_load(session, len(entries)) as logged:
        ids = fts.new_ids(session, "catalog_entry", len(entries))
        with fts.BulkWriter(session) as writer:
            for start in range(0, len(entries), chunk):
                part, part_ids = entries[start:start + chunk], ids[start:start + chunk]
                codes = [e.code or _take_code(nxt, _prefix(e, principal)) for e in part]
                late += _bulk_chunk(writer, principal, lookup, part, part_ids, codes, status, reason)
                logged(part_ids[0], part_ids[-1])
                result.created += len(part)
                if keep_codes:
                    result.codes.extend(codes)
                if progress:
                    progress(len(part))
        fts.index_rows(session, late)
    return result


@dataclass
class _BulkLookup:
    classes: dict[str, CatalogClass]
    depts: dict[str, Department]
    sqlite: bool
    now: datetime


def _bulk_chunk(writer: fts.BulkWriter, principal: Principal, lookup: _BulkLookup,
                part: list[EntryIn], ids: list[int], codes: list[str], status: str,
                reason: str | None) -> list[dict[str, Any]]:
    """Queue one chunk: entries, their items, first versions and index rows."""
    classes, depts, sqlite, now = lookup.classes, lookup.depts, lookup.sqlite, lookup.now
    stamp, day = (fts.sqlite_value(now), fts.sqlite_value(now.date())) if sqlite else (now, now.date())
    actor_id = principal.id if principal.kind == "user" else None
    rows: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    index: list[tuple[int, list[str], list[str]]] = []
    for eid, e, code in zip(ids, part, codes, strict=True):
        cls = classes[e.class_code.strip()]
        prov = depts[e.provider_code or (principal.department_code or "")]
        release = e.release_date or (now.date() if status == "published" else None)
        rows.append((eid, code, *_fast_values(e), cls.id, cls.code, cls.code[0], prov.id,
                     prov.code, status, 1, actor_id, stamp, stamp, day,
                     fts.sqlite_value(release) if sqlite else release))
        its = _fast_items(e)
        items.extend((eid, pos, *it) for pos, it in enumerate(its))
        title, body = fts.document_tokens(e.name, prov.name, e.summary, e.keywords,
                                          [it[0] for it in its])
        index.append((eid, title, body))
    writer.put("catalog_entry", _ENTRY_COLUMNS, rows)
    writer.put("catalog_item", _ITEM_COLUMNS, items)
    writer.put("catalog_entry_version", _VERSION_COLUMNS, [
        (eid, 1, "import", status, actor_id, principal.display_name, reason, "[]", stamp)
        for eid in ids])
    table_name, columns, index_rows, late = fts.index_batch(index, sqlite)
    writer.put(table_name, columns, index_rows)
    return late
