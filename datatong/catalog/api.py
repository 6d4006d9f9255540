"""HTTP API of the catalog (/api/v1/catalog)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from datatong.apitypes import UtcDateTime
from datatong.audit.writer import log_access
from datatong.catalog import finder, service, vocab
from datatong.catalog.models import CatalogEntry
from datatong.catalog.schemas import (
    ClassIn,
    ClassOut,
    ClassUpdate,
    EntryCreate,
    EntryOut,
    EntrySummary,
    EntryUpdate,
    FacetValue,
    ItemChangeIn,
    ReasonIn,
    ReviewIn,
    SearchOut,
    VersionOut,
)
from datatong.db import utcnow
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing.workdays import local_date
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/catalog", tags=["目录 catalog"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)


def entry_out(entry: CatalogEntry, principal: Principal) -> EntryOut:
    hidden = {} if service.may_see_no_share_basis(principal, entry) else {"no_share_basis": None}
    return EntryOut.model_validate(
        {
            **{c: getattr(entry, c) for c in EntryOut.model_fields if hasattr(entry, c) and c != "items"},
            **hidden,
            "class_name": entry.catalog_class.name,
            "provider_name": entry.provider.name,
            "status_label": vocab.STATUSES.get(entry.status, entry.status),
            "update_overdue": entry.update_due_at is not None and entry.update_due_at < local_date(utcnow()),
            "items": [
                {
                    **{
                        c: getattr(i, c)
                        for c in (
                            "id",
                            "name",
                            "code",
                            "data_type",
                            "length",
                            "description",
                            "sensitivity",
                            "is_authoritative",
                        )
                    },
                    "data_type_label": vocab.DATA_TYPES.get(i.data_type, ""),
                    "sensitivity_label": vocab.SENSITIVITIES.get(i.sensitivity, ""),
                }
                for i in entry.items
            ],
        }
    )


def summary_out(entry: CatalogEntry) -> EntrySummary:
    return EntrySummary(
        id=entry.id,
        code=entry.code,
        name=entry.name,
        summary=entry.summary,
        provider_code=entry.provider_code,
        provider_name=entry.provider.name,
        class_code=entry.class_code,
        share_type=entry.share_type,
        update_cycle=entry.update_cycle,
        format_category=entry.format_category,
        is_open=entry.is_open,
        status=entry.status,
        modified_at=entry.modified_at,
    )


def search_params(
    q: str = Query("", max_length=200, description="关键词（中文分词检索）"),
    provider: str | None = Query(None, max_length=32, description="提供方部门代码"),
    class_code: str | None = Query(None, alias="class", max_length=32, description="分类代码前缀"),
    share_type: str | None = Query(None, max_length=16),
    update_cycle: str | None = Query(None, max_length=16),
    format: str | None = Query(None, max_length=32, description="资源格式分类"),
    open: bool | None = Query(None, description="是否向社会开放"),
    status: str | None = Query(None, max_length=24),
    modified_since: UtcDateTime | None = Query(None, description="只返回此后修改的资源（ISO 8601，无时区视为 UTC）"),
    sort: str = Query("relevance", max_length=16, description="relevance/modified/name/code"),
    limit: int = Query(20, ge=1, le=200),
    cursor: str | None = Query(None, max_length=500, description="上一页返回的 next_cursor"),
    facets: bool = Query(True),
) -> finder.SearchParams:
    return finder.SearchParams(
        q=q,
        provider=provider,
        class_code=class_code,
        share_type=share_type,
        update_cycle=update_cycle,
        format=format,
        open=open,
        status=status,
        modified_since=modified_since,
        sort=sort,
        limit=limit,
        cursor=cursor,
        facets=facets,
    )


@router.get("/entries", response_model=SearchOut, summary="检索目录（分词、分面、游标翻页）")
def search_entries(
    request: Request,
    params: finder.SearchParams = Depends(search_params),
    session: Session = Db,
    principal: Principal = Who,
) -> SearchOut:
    result = finder.search(session, principal, params, request.app.state.settings.anonymous_catalog)
    return SearchOut(
        total=result.total,
        results=[summary_out(e) for e in result.entries],
        next_cursor=result.next_cursor,
        facets={
            k: [FacetValue(value=v, label=lab, count=n) for v, lab, n in vals] for k, vals in result.facets.items()
        },
    )


@router.post("/entries", response_model=EntryOut, status_code=201, summary="新建信息资源（草稿）")
def create_entry(body: EntryCreate, session: Session = Db, principal: Principal = Who) -> EntryOut:
    return entry_out(service.create_entry(session, principal, body, body.reason), principal)


@router.get("/entries/{entry_id}", response_model=EntryOut, summary="信息资源详情")
def get_entry(entry_id: int, request: Request, session: Session = Db, principal: Principal = Who) -> EntryOut:
    settings = request.app.state.settings
    return _read(settings, service.get_entry(session, principal, entry_id, settings.anonymous_catalog), principal)


@router.get("/by-code/{code:path}", response_model=EntryOut, summary="按信息资源代码查询")
def get_by_code(code: str, request: Request, session: Session = Db, principal: Principal = Who) -> EntryOut:
    settings = request.app.state.settings
    return _read(settings, service.get_entry_by_code(session, principal, code, settings.anonymous_catalog), principal)


def _read(settings: Any, entry: CatalogEntry, principal: Principal) -> EntryOut:
    """Who looked at which entry is recorded before the answer leaves."""
    log_access(settings, principal, "catalog.entry.read", resource=entry.code, subject_department=entry.provider_code)
    return entry_out(entry, principal)


@router.put("/entries/{entry_id}", response_model=EntryOut, summary="修改信息资源（生成新版本，须填原因）")
def update_entry(entry_id: int, body: EntryUpdate, session: Session = Db, principal: Principal = Who) -> EntryOut:
    return entry_out(service.update_entry(session, principal, entry_id, body, body.reason), principal)


@router.get("/entries/{entry_id}/versions", response_model=list[VersionOut], summary="版本历史（含差异）")
def versions(entry_id: int, session: Session = Db, principal: Principal = Who) -> list[VersionOut]:
    return [VersionOut.model_validate(v) for v in service.list_versions(session, principal, entry_id)]


@router.post("/entries/{entry_id}/submit", response_model=EntryOut, summary="提交发布审核")
def submit(entry_id: int, body: ReasonIn | None = None, session: Session = Db, principal: Principal = Who) -> EntryOut:
    return entry_out(
        service.transition(session, principal, entry_id, "submit", body.reason if body else None), principal
    )


@router.post(
    "/entries/{entry_id}/item-change", response_model=EntryOut, summary="报告数据项变更（须在 15 个工作日内更新目录）"
)
def report_item_change(
    entry_id: int, body: ItemChangeIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> EntryOut:
    return entry_out(service.report_item_change(session, settings, principal, entry_id, body.note), principal)


@router.get("/update-due", response_model=list[EntrySummary], summary="待更新的目录（数据项已变更）")
def update_due(
    overdue: bool = Query(False, description="只看已超期的"), session: Session = Db, principal: Principal = Who
) -> list[EntrySummary]:
    found = service.entries_due_for_update(session, principal, overdue_on=local_date(utcnow()) if overdue else None)
    return [summary_out(e).model_copy(update={"update_due_at": e.update_due_at}) for e in found]


@router.post("/entries/{entry_id}/revoke", response_model=EntryOut, summary="申请撤销（须填理由）")
def request_revoke(entry_id: int, body: ReasonIn, session: Session = Db, principal: Principal = Who) -> EntryOut:
    return entry_out(service.transition(session, principal, entry_id, "request_revoke", body.reason), principal)


@router.post("/entries/{entry_id}/review", response_model=EntryOut, summary="平台管理员审核（发布或撤销）")
def review(entry_id: int, body: ReviewIn, session: Session = Db, principal: Principal = Who) -> EntryOut:
    return entry_out(service.review(session, principal, entry_id, body.decision, body.reason), principal)


@router.get("/classes", response_model=list[ClassOut], summary="信息资源分类")
def classes(session: Session = Db) -> list[ClassOut]:
    return [ClassOut.model_validate(c) for c in service.list_classes(session)]


@router.post("/classes", response_model=ClassOut, status_code=201, summary="新增分类（平台管理员）")
def create_class(body: ClassIn, session: Session = Db, principal: Principal = Who) -> ClassOut:
    return ClassOut.model_validate(service.create_class(session, principal, body.code, body.name, body.description))


@router.patch("/classes/{class_id}", response_model=ClassOut, summary="修改分类（平台管理员）")
def update_class(class_id: int, body: ClassUpdate, session: Session = Db, principal: Principal = Who) -> ClassOut:
    return ClassOut.model_validate(service.update_class(session, principal, class_id, body.name, body.description))
