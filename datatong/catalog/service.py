"""Rules of the 政务信息资源目录: create, edit, review, version, find.

Plain functions taking a session and the acting principal; the API, the CLI and
the pages all call these, so they cannot disagree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from datatong.audit import service as audit
from datatong.catalog import search as fts
from datatong.catalog import vocab
from datatong.catalog.models import CatalogClass, CatalogEntry, DataItem, EntryVersion
from datatong.catalog.rules import RuleError, check_entry
from datatong.catalog.schemas import EntryIn
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Forbidden, NotFound, Unauthenticated, ValidationFailed, invalid
from datatong.orgs.models import Department, Role
from datatong.orgs.service import Principal, department_by_code, require_platform_admin

EDITOR_ROLES = (Role.DEPT_ADMIN, Role.DATA_OFFICER)
EDITABLE_STATUSES = ("draft", "publish_rejected", "published")
ENTRY_FIELDS = [
    "name",
    "class_code",
    "provider_code",
    "provider_unit",
    "summary",
    "keywords",
    "format_category",
    "format_type",
    "share_type",
    "share_condition",
    "no_share_basis",
    "share_method",
    "share_subtype",
    "is_open",
    "open_condition",
    "update_cycle",
    "release_date",
    "related_codes",
    "source_system",
    "online_url",
    "service_info",
    "metadata_maintainer",
]
FIELD_LABELS = {
    "name": "信息资源名称",
    "class_code": "信息资源分类",
    "provider_code": "提供方代码",
    "provider_unit": "提供方内部部门",
    "summary": "摘要",
    "keywords": "关键字",
    "format_category": "信息资源格式分类",
    "format_type": "信息资源格式类型",
    "share_type": "共享类型",
    "share_condition": "共享条件",
    "no_share_basis": "不予共享依据",
    "share_method": "共享方式",
    "share_subtype": "共享方式子类",
    "is_open": "是否向社会开放",
    "open_condition": "开放条件",
    "update_cycle": "更新周期",
    "release_date": "发布日期",
    "related_codes": "关联资源代码",
    "source_system": "来源信息系统",
    "online_url": "在线资源链接",
    "service_info": "服务信息",
    "metadata_maintainer": "元数据维护方",
    "items": "信息项",
}
ITEM_FIELDS = ["code", "data_type", "length", "description", "sensitivity", "is_authoritative"]
ITEM_LABELS = {
    "code": "代码",
    "data_type": "数据类型",
    "length": "长度",
    "description": "描述",
    "sensitivity": "敏感级别",
    "is_authoritative": "权威来源",
}

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
    "create": "创建",
    "update": "修改",
    "submit": "提交发布审核",
    "approve_publish": "审核通过并发布",
    "reject_publish": "驳回发布",
    "request_revoke": "申请撤销",
    "approve_revoke": "同意撤销",
    "reject_revoke": "驳回撤销",
    "import": "批量导入",
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
        raise invalid(
            "catalog.class_unknown", f"信息资源分类 {code} 不存在", f"Unknown classification code {code}", "class_code"
        )
    return cls


def _parent_of(session: Session, code: str) -> tuple[CatalogClass | None, int]:
    """The parent class of a full code and the level the code would have."""
    if not code.isdigit():
        raise invalid(
            "catalog.class_code_invalid", "分类代码只能由数字组成", "Classification codes are digits only", "code"
        )
    if len(code) == 1:
        return None, 1
    prefix_len = {2: 1, 3: 1, 4: 3, 5: 3, 6: 3}.get(len(code), 6)
    # 类 1 digit, 项 2 more, 目 3 more, 细目 anything after the 6th digit.
    level = 2 if len(code) == 3 else 3 if len(code) == 6 else 4 if len(code) > 6 else 0
    if level == 0:
        raise invalid(
            "catalog.class_code_invalid",
            "分类代码由 类(1位)+项(2位)+目(3位)+细目(若干位) 组成",
            "A class code is 1 + 2 + 3 digits, then any number for 细目",
            "code",
        )
    parent = session.scalar(select(CatalogClass).where(CatalogClass.code == code[:prefix_len]))
    if parent is None:
        raise invalid(
            "catalog.class_parent_missing",
            f"上级分类 {code[:prefix_len]} 不存在",
            f"Parent class {code[:prefix_len]} does not exist",
            "code",
        )
    return parent, level


def create_class(
    session: Session,
    principal: Principal,
    code: str,
    name: str,
    description: str | None = None,
    department_id: int | None = None,
) -> CatalogClass:
    require_platform_admin(principal)
    code = (code or "").strip()
    if not (name or "").strip():
        raise invalid("catalog.class_name_required", "请填写分类名称", "Class name is required", "name")
    if session.scalar(select(CatalogClass.id).where(CatalogClass.code == code)):
        raise invalid("catalog.class_code_taken", f"分类代码 {code} 已存在", f"Class code {code} exists", "code")
    parent, level = _parent_of(session, code)
    cls = CatalogClass(
        code=code,
        name=name.strip(),
        level=level,
        parent_id=parent.id if parent else None,
        description=description,
        department_id=department_id,
    )
    session.add(cls)
    session.flush()
    audit.record(
        session,
        principal,
        "catalog.class.create",
        resource=f"class:{cls.code}",
        detail={"name": cls.name, "level": level},
    )
    return cls


def update_class(
    session: Session, principal: Principal, class_id: int, name: str | None, description: str | None
) -> CatalogClass:
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
    audit.record(
        session,
        principal,
        "catalog.class.update",
        resource=f"class:{cls.code}",
        detail={"name": name, "description": description},
    )
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
    return principal.kind == "user" and principal.role in EDITOR_ROLES and principal.department_id == pid


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
    return principal.is_platform_admin or (principal.is_authenticated and principal.department_id == entry.provider_id)


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


def get_entry(session: Session, principal: Principal, entry_id: int, anonymous_catalog: str = "open") -> CatalogEntry:
    entry = get_by_id(session, CatalogEntry, entry_id)
    # An entry the caller may not see is reported as missing: its existence is
    # itself information another department has not published.
    if entry is None or not can_view(principal, entry, anonymous_catalog):
        raise NotFound("信息资源", "Catalog entry")
    return entry


def get_entry_by_code(
    session: Session, principal: Principal, code: str, anonymous_catalog: str = "open"
) -> CatalogEntry:
    entry_id = session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == code))
    if entry_id is None:
        raise NotFound("信息资源", "Catalog entry")
    return get_entry(session, principal, entry_id, anonymous_catalog)


def list_versions(session: Session, principal: Principal, entry_id: int) -> list[EntryVersion]:
    entry = get_entry(session, principal, entry_id)
    versions = list(
        session.scalars(
            select(EntryVersion).where(EntryVersion.entry_id == entry_id).order_by(EntryVersion.version.desc())
        )
    )
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
        id=v.id,
        entry_id=v.entry_id,
        version=v.version,
        action=v.action,
        status=v.status,
        actor_id=v.actor_id,
        actor_name=v.actor_name,
        reason=v.reason,
        created_at=v.created_at,
        changes=[c for c in v.changes if c.get("field") != "no_share_basis"],
    )


# ---------------------------------------------------------------- write


def _raise_rules(errors: list[RuleError]) -> None:
    if errors:
        first = errors[0]
        raise ValidationFailed(
            first.code, first.message, first.message_en, field=first.field, details=[e.as_dict() for e in errors]
        )


def _normalise(data: EntryIn) -> EntryIn:
    """Fill what the rules allow to default: fixed widths, the default share method."""
    items = []
    for item in data.items:
        length = item.length or vocab.FIXED_LENGTH.get(item.data_type)
        items.append(
            item.model_copy(
                update={"name": item.name.strip(), "length": length, "data_type": item.data_type.strip().upper()}
            )
        )
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
        raise invalid(
            "catalog.class_too_broad", "请选择到“项”或更细的分类", "Choose a class at 项 level or finer", "class_code"
        )
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
                changes.append(
                    {
                        "field": f"items.{name}.{f}",
                        "label": f"信息项“{name}”的{ITEM_LABELS[f]}",
                        "old": old_items[name].get(f),
                        "new": item.get(f),
                    }
                )
    for name, item in old_items.items():
        if name not in new_items:
            changes.append({"field": f"items.{name}", "label": f"信息项“{name}”", "old": item, "new": None})
    return changes


def _record_version(
    session: Session,
    entry: CatalogEntry,
    principal: Principal,
    action: str,
    reason: str | None,
    changes: list[dict[str, Any]],
) -> None:
    session.add(
        EntryVersion(
            entry_id=entry.id,
            version=entry.version,
            action=action,
            status=entry.status,
            actor_id=principal.id if principal.kind == "user" else None,
            actor_name=principal.display_name,
            reason=reason,
            changes=changes,
        )
    )


def _reindex(session: Session, entry: CatalogEntry) -> None:
    title, body = fts.documents(
        entry.name,
        entry.provider.name if entry.provider else "",
        entry.summary,
        entry.keywords,
        [i.name for i in entry.items],
    )
    fts.index_rows(session, [{"id": entry.id, "title": title, "body": body}])


def create_entry(session: Session, principal: Principal, data: EntryIn, reason: str | None = None) -> CatalogEntry:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if not (principal.is_platform_admin or principal.role in EDITOR_ROLES):
        raise Forbidden(
            "只有数据管理员、部门管理员或平台管理员可以编目", "Only data officers and admins may create entries"
        )
    provider = _resolve_provider(session, principal, data)
    data = _normalise(data)
    _raise_rules(check_entry(data))
    cls = _check_class(session, data.class_code)
    if data.code:
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以指定信息资源代码", "Only the platform admin may set a code")
        if session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == data.code)):
            raise invalid(
                "catalog.code_taken", f"信息资源代码 {data.code} 已被使用", f"Code {data.code} is taken", "code"
            )
        code = data.code
    else:
        code = next_code(session, cls.code, provider.code)
    entry = CatalogEntry(
        code=code, status="draft", version=1, created_by_id=principal.id if principal.kind == "user" else None
    )
    _apply(entry, data, cls, provider)
    entry.provider = provider
    session.add(entry)
    session.flush()
    _record_version(session, entry, principal, "create", reason, [])
    _reindex(session, entry)
    session.flush()
    audit.record(
        session,
        principal,
        "catalog.entry.create",
        resource=entry.code,
        subject_department=provider.code,
        detail={"name": entry.name, "reason": reason},
    )
    return entry


def update_entry(
    session: Session, principal: Principal, entry_id: int, data: EntryIn, reason: str | None
) -> CatalogEntry:
    entry = get_entry(session, principal, entry_id)
    if not can_edit(principal, entry):
        raise Forbidden("只能修改本部门的信息资源", "You may edit only your own department's entries")
    if entry.status not in EDITABLE_STATUSES:
        raise invalid(
            "catalog.not_editable",
            f"“{vocab.STATUSES[entry.status]}”状态的信息资源不能修改",
            f"An entry in state {entry.status} cannot be edited",
            "status",
        )
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
    if entry.update_due_at is not None and any(c["field"].startswith("items.") for c in changes):
        # The reported change of data items is now in the catalog: the deadline is met.
        entry.items_changed_at = None
        entry.update_due_at = None
    session.flush()
    _record_version(session, entry, principal, "update", reason.strip() if reason else None, changes)
    _reindex(session, entry)
    session.flush()
    audit.record(
        session,
        principal,
        "catalog.entry.update",
        resource=entry.code,
        subject_department=entry.provider_code,
        detail={"version": entry.version, "fields": [c["field"] for c in changes], "reason": reason},
    )
    return entry


def transition(
    session: Session, principal: Principal, entry_id: int, action: str, reason: str | None = None
) -> CatalogEntry:
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
        raise AppError(
            "catalog.transition_invalid",
            f"“{vocab.STATUSES[entry.status]}”状态的信息资源不能执行“{ACTION_LABELS[action]}”",
            f"Cannot {action} an entry in state {entry.status}",
            field="status",
            status_code=409,
        )
    if needs_reason and not (reason or "").strip():
        raise invalid("catalog.reason_required", "请填写理由", "A reason is required", "reason")
    old = entry.status
    entry.status = target
    if target == "published" and entry.release_date is None:
        entry.release_date = date.today()
    entry.modified_at = utcnow()
    entry.version += 1
    session.flush()
    _record_version(
        session,
        entry,
        principal,
        action,
        (reason or "").strip() or None,
        [{"field": "status", "label": "状态", "old": old, "new": target}],
    )
    session.flush()
    audit.record(
        session,
        principal,
        f"catalog.entry.{action}",
        resource=entry.code,
        subject_department=entry.provider_code,
        detail={"from": old, "to": target, "reason": (reason or "").strip() or None},
    )
    return entry


def review(session: Session, principal: Principal, entry_id: int, decision: str, reason: str | None) -> CatalogEntry:
    """The platform admin's decision on whatever the entry awaits (publication or revocation)."""
    entry = get_entry(session, principal, entry_id)
    if decision not in ("approve", "reject"):
        raise invalid(
            "catalog.decision_invalid",
            "审核结论须为 approve（通过）或 reject（驳回）",
            "Decision must be approve or reject",
            "decision",
        )
    kind = {"pending_publish": "publish", "pending_revoke": "revoke"}.get(entry.status)
    if kind is None:
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以审核", "Only the platform admin reviews entries")
        raise AppError(
            "catalog.transition_invalid",
            "该信息资源当前没有待审核的事项",
            "Nothing is awaiting review on this entry",
            field="status",
            status_code=409,
        )
    return transition(session, principal, entry_id, f"{decision}_{kind}", reason)


# ---------------------------------------------------------------- bulk import


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
            errs.append(
                RuleError(
                    "catalog.class_unknown",
                    "class_code",
                    f"信息资源分类 {e.class_code} 不存在",
                    f"Unknown classification code {e.class_code}",
                )
            )
        elif cls.level < 2:
            errs.append(
                RuleError(
                    "catalog.class_too_broad",
                    "class_code",
                    "请选择到“项”或更细的分类",
                    "Choose a class at 项 level or finer",
                )
            )
        prov = e.provider_code or principal.department_code
        if prov not in depts:
            errs.append(
                RuleError(
                    "department.unknown", "provider_code", f"提供方代码 {prov} 不存在", f"Unknown provider code {prov}"
                )
            )
        elif prov != principal.department_code and not principal.is_platform_admin:
            errs.append(
                RuleError(
                    "forbidden",
                    "provider_code",
                    "只能导入本部门的信息资源",
                    "You may import only your own department's entries",
                )
            )
        if e.code:
            if not principal.is_platform_admin:
                errs.append(
                    RuleError(
                        "forbidden",
                        "code",
                        "只有平台管理员可以指定信息资源代码",
                        "Only the platform admin may set a code",
                    )
                )
            elif e.code in taken or e.code in seen:
                errs.append(
                    RuleError(
                        "catalog.code_taken", "code", f"信息资源代码 {e.code} 已被使用", f"Code {e.code} is taken"
                    )
                )
            seen.add(e.code)
        out.append(errs)
    return out


def require_editor(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if not (principal.is_platform_admin or principal.role in EDITOR_ROLES):
        raise Forbidden(
            "只有数据管理员、部门管理员或平台管理员可以编目", "Only data officers and admins may create entries"
        )


# ---------------------------------------------------------------- 15-working-day update deadline


def report_item_change(
    session: Session, settings: Any, principal: Principal, entry_id: int, note: str | None, now: datetime | None = None
) -> CatalogEntry:
    """The provider (or the platform admin) reports that the data items behind an entry
    changed: the entry must be updated within ``catalog_update_days`` working days (15 by
    default). A second report keeps the earlier deadline. Updating the entry's items clears it."""
    from datatong.sharing import calendar, notify, workdays

    entry = get_entry(session, principal, entry_id)
    if not can_edit(principal, entry):
        raise Forbidden("只能报告本部门信息资源的数据项变更", "You may report changes of your own department's entries")
    if entry.status not in ("published", *EDITABLE_STATUSES):
        raise invalid("catalog.not_editable", "该信息资源已撤销", "The entry is revoked", "status")
    text = (note or "").strip()
    if not text:
        raise invalid("catalog.reason_required", "请说明数据项的变化", "Describe how the data items changed", "note")
    moment = now or utcnow()
    calendar.refresh(session)
    due = workdays.due_date(settings, "catalog_update", moment)
    if entry.update_due_at is None or due < entry.update_due_at:
        entry.items_changed_at = moment
        entry.update_due_at = due
    session.flush()
    audit.record(
        session,
        principal,
        "catalog.entry.items_changed",
        resource=entry.code,
        subject_department=entry.provider_code,
        reason=text,
        detail={"update_due_at": entry.update_due_at.isoformat() if entry.update_due_at else None},
    )
    notify.notify_department(
        session,
        entry.provider_id,
        "catalog_update",
        f"数据项已变更，请于 {entry.update_due_at} 前更新目录：{entry.name}",
        body=text,
        link=f"/catalog/{entry.id}",
    )
    return entry


def entries_due_for_update(
    session: Session, principal: Principal, *, overdue_on: date | None = None, limit: int = 200
) -> list[CatalogEntry]:
    """Entries waiting for an update after a change of data items (earliest deadline first);
    with ``overdue_on``, only those past due on that day. Platform admin: all; others: own."""
    require_editor(principal)
    stmt = select(CatalogEntry).where(CatalogEntry.update_due_at.is_not(None)).order_by(CatalogEntry.update_due_at)
    if overdue_on is not None:
        stmt = stmt.where(CatalogEntry.update_due_at < overdue_on)
    if not principal.is_platform_admin:
        stmt = stmt.where(CatalogEntry.provider_id == principal.department_id)
    return list(session.scalars(stmt.limit(limit)).unique())
