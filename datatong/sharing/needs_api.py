"""HTTP API of supply–demand docking (/api/v1/sharing/needs): post, route, answer, close."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from datatong.audit.writer import log_access
from datatong.catalog.models import CatalogEntry
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import needs, service, workdays
from datatong.sharing.models import NEED_STATUSES, PURPOSE_KINDS, ShareNeed
from datatong.sharing.needs_schemas import AnswerIn, CloseIn, NeedDetail, NeedEventOut, NeedIn, NeedOut, RouteIn
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/sharing/needs", tags=["供需对接 needs"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)


def need_out(session: Session, need: ShareNeed) -> NeedOut:
    entry = session.get(CatalogEntry, need.entry_id) if need.entry_id is not None else None
    shown = entry if entry is not None and entry.status == "published" else None
    return NeedOut(
        id=need.id,
        title=need.title,
        description=need.description,
        items=list(need.items),
        purpose_kind=need.purpose_kind,
        purpose_label=PURPOSE_KINDS.get(need.purpose_kind, need.purpose_kind),
        purpose=need.purpose,
        status=need.status,
        status_label=NEED_STATUSES.get(need.status, need.status),
        consumer_code=need.consumer.code,
        consumer_name=need.consumer.name,
        routed_to_code=need.routed_to.code if need.routed_to else None,
        routed_to_name=need.routed_to.name if need.routed_to else None,
        routed_at=need.routed_at,
        due_at=need.due_at,
        due_provisional=bool(need.due_at and need.routed_at and workdays.is_provisional(need.routed_at, need.due_at)),
        overdue=needs.overdue(need),
        answer=need.answer,
        answered_at=need.answered_at,
        entry_id=need.entry_id,
        entry_code=shown.code if shown else None,
        entry_name=shown.name if shown else None,
        closed_at=need.closed_at,
        created_at=need.created_at,
        updated_at=need.updated_at,
    )


@router.post("", response_model=NeedOut, status_code=201, summary="提出数据需求（目录中没有的数据）")
def post_need(body: NeedIn, session: Session = Db, principal: Principal = Who) -> NeedOut:
    return need_out(session, needs.post_need(session, principal, **body.model_dump()))


@router.get("", response_model=list[NeedOut], summary="数据需求列表（本部门提出的 / 分派给本部门的 / 全部）")
def list_needs(
    view: str = Query(
        "mine", max_length=16, description="mine 本部门提出的 / assigned 分派给本部门的 / all 全部（平台管理员）"
    ),
    status: str | None = Query(None, max_length=16, description="按状态筛选：open/routed/will_publish/cannot/closed"),
    overdue: bool = Query(False, description="只看已超期未答复的"),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    session: Session = Db,
    principal: Principal = Who,
) -> list[NeedOut]:
    found = needs.list_needs(
        session,
        principal,
        view=view,
        status=status,
        overdue_on=service.today() if overdue else None,
        limit=limit,
        offset=offset,
    )
    return [need_out(session, n) for n in found]


@router.get("/{need_id}", response_model=NeedDetail, summary="数据需求详情（含流转记录）")
def get_need(need_id: int, session: Session = Db, principal: Principal = Who, settings: Settings = Conf) -> NeedDetail:
    need = needs.get_need(session, principal, need_id)
    history = needs.need_history(session, principal, need_id)
    log_access(
        settings,
        principal,
        "sharing.need.read",
        resource=f"need:{need.id}",
        subject_department=need.routed_to.code if need.routed_to else need.consumer.code,
    )
    return NeedDetail(**need_out(session, need).model_dump(), history=[NeedEventOut.model_validate(h) for h in history])


@router.post("/{need_id}/route", response_model=NeedOut, summary="分派需求给可能的提供部门（平台管理员）")
def route(
    need_id: int, body: RouteIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> NeedOut:
    need = needs.route(session, settings, principal, need_id, department_code=body.department_code, reason=body.reason)
    return need_out(session, need)


@router.post("/{need_id}/answer", response_model=NeedOut, summary="答复需求：将编目发布 / 无法提供（被分派部门）")
def answer(need_id: int, body: AnswerIn, session: Session = Db, principal: Principal = Who) -> NeedOut:
    need = needs.answer(session, principal, need_id, answer=body.answer, text=body.text, entry_id=body.entry_id)
    return need_out(session, need)


@router.post("/{need_id}/close", response_model=NeedOut, summary="关闭需求（可关联满足需求的已发布信息资源）")
def close(need_id: int, body: CloseIn, session: Session = Db, principal: Principal = Who) -> NeedOut:
    need = needs.close(session, principal, need_id, entry_id=body.entry_id, reason=body.reason)
    return need_out(session, need)
