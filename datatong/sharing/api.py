"""HTTP API of sharing (/api/v1/sharing): applications, grants, unconditional grants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from datatong.audit.writer import log_access
from datatong.errors import NotFound
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import calendar, cases, policy, service, workdays
from datatong.sharing.models import APPLICATION_STATUSES, GRANT_STATUSES, PURPOSE_KINDS, Grant, ShareApplication
from datatong.sharing.schemas import (
    ApplicationDetail,
    ApplicationIn,
    ApplicationOut,
    ApplicationPatch,
    ApprovalIn,
    CalendarDayOut,
    CalendarImportIn,
    CalendarImportOut,
    CalendarYearDetail,
    CalendarYearOut,
    CaseIn,
    CaseOut,
    CaseResolveIn,
    CoordinateIn,
    DecisionIn,
    EventOut,
    GrantChangeIn,
    GrantOut,
    MaskingRuleOut,
    MaskingRulesIn,
    ReasonIn,
    RenewIn,
    ReviewIn,
    SharingSettings,
    SubmitIn,
    TransferIn,
    UnconditionalIn,
)
from datatong.sharing.workdays import is_overdue
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/sharing", tags=["共享 sharing"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)
AWAITING = ("compliance_review", "awaiting_provider")
YearPath = Annotated[int, Path(ge=2000, le=2100, description="年份")]


def application_out(app: ShareApplication) -> ApplicationOut:
    today = service.today()
    return ApplicationOut.model_validate(
        {
            **{c: getattr(app, c) for c in ApplicationOut.model_fields if hasattr(app, c)},
            "entry_name": app.entry.name,
            "provider_code": app.provider.code,
            "consumer_code": app.consumer.code,
            "purpose_label": PURPOSE_KINDS.get(app.purpose_kind, app.purpose_kind),
            "status_label": APPLICATION_STATUSES.get(app.status, app.status),
            "overdue": app.status in AWAITING and app.due_at is not None and is_overdue(today, app.due_at),
            "due_provisional": bool(
                app.due_at and app.submitted_at and workdays.is_provisional(app.submitted_at, app.due_at)
            ),
        }
    )


def grant_out(grant: Grant) -> GrantOut:
    return GrantOut.model_validate(
        {
            **{c: getattr(grant, c) for c in GrantOut.model_fields if hasattr(grant, c)},
            "consumer_code": grant.consumer.code,
            "provider_code": grant.provider.code,
            "status_label": GRANT_STATUSES.get(grant.status, grant.status),
        }
    )


def _approval(body: ApprovalIn) -> service.Approval:
    return service.Approval(
        items=body.items,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        rows_per_day=body.rows_per_day,
        calls_per_minute=body.calls_per_minute,
        clear_items=tuple(body.clear_items),
    )


# ---------------------------------------------------------------- applications


@router.post("/applications", response_model=ApplicationOut, status_code=201, summary="新建共享申请（草稿）")
def create_application(body: ApplicationIn, session: Session = Db, principal: Principal = Who) -> ApplicationOut:
    return application_out(service.create_application(session, principal, **body.model_dump()))


@router.get(
    "/applications", response_model=list[ApplicationOut], summary="共享申请列表（本部门的 / 待本部门答复的 / 全部）"
)
def list_applications(
    view: str = Query(
        "mine", max_length=16, description="mine 本部门提交的 / provider 待本部门答复的 / all 全部（平台管理员）"
    ),
    status: str | None = Query(None, max_length=24),
    overdue: bool = Query(False, description="只看已超期未答复的"),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    session: Session = Db,
    principal: Principal = Who,
) -> list[ApplicationOut]:
    apps = service.list_applications(
        session,
        principal,
        view=view,
        status=status,
        overdue_on=service.today() if overdue else None,
        limit=limit,
        offset=offset,
    )
    return [application_out(a) for a in apps]


@router.patch("/applications/{application_id}", response_model=ApplicationOut, summary="修改草稿（含符合性审查退回的）")
def update_application(
    application_id: int, body: ApplicationPatch, session: Session = Db, principal: Principal = Who
) -> ApplicationOut:
    changes = body.model_dump(exclude_unset=True)
    return application_out(service.update_application(session, principal, application_id, **changes))


@router.get("/applications/{application_id}", response_model=ApplicationDetail, summary="共享申请详情（含流转记录）")
def get_application(
    application_id: int, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> ApplicationDetail:
    app = service.get_application(session, principal, application_id)
    history = service.application_history(session, principal, application_id)
    log_access(
        settings,
        principal,
        "sharing.application.read",
        resource=f"application:{app.id}",
        subject_department=app.provider.code,
    )
    return ApplicationDetail(**application_out(app).model_dump(), history=[EventOut.model_validate(h) for h in history])


@router.post("/applications/{application_id}/submit", response_model=ApplicationOut, summary="提交申请（签署安全承诺）")
def submit(
    application_id: int, body: SubmitIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> ApplicationOut:
    return application_out(
        service.submit(session, settings, principal, application_id, accept_commitment=body.accept_commitment)
    )


@router.post("/applications/{application_id}/withdraw", response_model=ApplicationOut, summary="撤回申请")
def withdraw(application_id: int, body: ReasonIn, session: Session = Db, principal: Principal = Who) -> ApplicationOut:
    return application_out(service.withdraw(session, principal, application_id, body.reason))


@router.post("/applications/{application_id}/review", response_model=ApplicationOut, summary="符合性审查（平台管理员）")
def review(
    application_id: int, body: ReviewIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> ApplicationOut:
    return application_out(
        service.review(session, settings, principal, application_id, decision=body.decision, reason=body.reason)
    )


@router.post(
    "/applications/{application_id}/decide", response_model=ApplicationOut, summary="提供方答复：同意/部分同意/不同意"
)
def decide(application_id: int, body: DecisionIn, session: Session = Db, principal: Principal = Who) -> ApplicationOut:
    return application_out(
        service.decide(
            session, principal, application_id, decision=body.decision, reason=body.reason, approval=_approval(body)
        )
    )


@router.post("/applications/{application_id}/negotiate", response_model=ApplicationOut, summary="申请协商（被拒后）")
def negotiate(application_id: int, body: ReasonIn, session: Session = Db, principal: Principal = Who) -> ApplicationOut:
    return application_out(service.negotiate(session, principal, application_id, body.reason))


@router.post("/applications/{application_id}/escalate", response_model=ApplicationOut, summary="申请协调（协商未果）")
def escalate(application_id: int, body: ReasonIn, session: Session = Db, principal: Principal = Who) -> ApplicationOut:
    return application_out(service.escalate(session, principal, application_id, body.reason))


@router.post(
    "/applications/{application_id}/coordinate", response_model=ApplicationOut, summary="协调结论（平台管理员）"
)
def coordinate(
    application_id: int, body: CoordinateIn, session: Session = Db, principal: Principal = Who
) -> ApplicationOut:
    return application_out(
        service.coordinate(
            session, principal, application_id, decision=body.decision, reason=body.reason, approval=_approval(body)
        )
    )


# ---------------------------------------------------------------- grants


@router.post("/unconditional-grants", response_model=GrantOut, status_code=201, summary="获取无条件共享授权")
def unconditional_grant(body: UnconditionalIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    return grant_out(
        service.request_unconditional_grant(
            session,
            principal,
            body.entry_id,
            purpose_kind=body.purpose_kind,
            purpose=body.purpose,
            items=body.items,
            client_id=body.client_id,
        )
    )


@router.get("/grants", response_model=list[GrantOut], summary="授权列表（本部门获得的 / 本部门提供的 / 全部）")
def list_grants(
    view: str = Query("mine", max_length=16, description="mine 本部门获得的 / provided 本部门提供的 / all 全部"),
    status: str | None = Query(None, max_length=16),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    session: Session = Db,
    principal: Principal = Who,
) -> list[GrantOut]:
    grants = service.list_grants(session, principal, view=view, status=status, limit=limit, offset=offset)
    return [grant_out(g) for g in grants]


@router.get("/grants/{grant_id}", response_model=GrantOut, summary="授权详情")
def get_grant(grant_id: int, session: Session = Db, principal: Principal = Who, settings: Settings = Conf) -> GrantOut:
    grant = service.get_grant(session, principal, grant_id)
    log_access(
        settings,
        principal,
        "sharing.grant.read",
        resource=grant.entry_code,
        subject_department=grant.provider.code,
        grant_id=grant.id,
    )
    return grant_out(grant)


def _change(session: Session, principal: Principal, grant_id: int, action: str, reason: str | None) -> GrantOut:
    return grant_out(service.change_grant(session, principal, grant_id, action, reason))


@router.post("/grants/{grant_id}/suspend", response_model=GrantOut, summary="暂停授权（提供方，须填理由）")
def suspend(grant_id: int, body: GrantChangeIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    return _change(session, principal, grant_id, "suspend", body.reason)


@router.post("/grants/{grant_id}/resume", response_model=GrantOut, summary="恢复授权（提供方）")
def resume(grant_id: int, body: GrantChangeIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    return _change(session, principal, grant_id, "resume", body.reason)


@router.post("/grants/{grant_id}/revoke", response_model=GrantOut, summary="撤销授权（提供方，须填理由）")
def revoke(grant_id: int, body: GrantChangeIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    return _change(session, principal, grant_id, "revoke", body.reason)


@router.post("/grants/{grant_id}/renew", response_model=GrantOut, summary="授权续期（提供方）")
def renew(grant_id: int, body: RenewIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    return grant_out(service.change_grant(session, principal, grant_id, "renew", body.reason, valid_to=body.valid_to))


# ---------------------------------------------------------------- settings


@router.put("/settings", response_model=SharingSettings, summary="共享设置：是否进行符合性审查（平台管理员）")
def update_settings(body: SharingSettings, session: Session = Db, principal: Principal = Who) -> SharingSettings:
    return SharingSettings(compliance_review=service.set_compliance_review(session, principal, body.compliance_review))


# ---------------------------------------------------------------- work calendar


@router.get("/calendar", response_model=list[CalendarYearOut], summary="工作日历：可计算期限的年份及来源")
def calendar_years(session: Session = Db, principal: Principal = Who) -> list[CalendarYearOut]:
    return [CalendarYearOut.model_validate(y) for y in calendar.list_years(session, principal)]


def _year_detail(session: Session, principal: Principal, year: int) -> dict[str, object]:
    info = next((y for y in calendar.list_years(session, principal) if y["year"] == year), None)
    if info is None:
        raise NotFound(f"{year} 年工作日历", f"work calendar {year}")
    days = [CalendarDayOut.model_validate(d) for d in calendar.year_days(session, year)]
    return {**info, "days": days}


@router.get("/calendar/{year}", response_model=CalendarYearDetail, summary="某年工作日历（平台导入的放假与调休日）")
def calendar_year(year: YearPath, session: Session = Db, principal: Principal = Who) -> CalendarYearDetail:
    return CalendarYearDetail.model_validate(_year_detail(session, principal, year))


@router.put(
    "/calendar/{year}", response_model=CalendarImportOut, summary="导入某年节假日安排（平台管理员），并重算在办申请期限"
)
def import_calendar_year(
    year: YearPath, body: CalendarImportIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> CalendarImportOut:
    plan = calendar.parse_json(
        {"year": year, "notice": body.notice, "holidays": body.holidays, "workdays": body.workdays}
    )
    calendar.import_year(session, principal, plan)
    moved = service.recompute_due_dates(session, settings)
    return CalendarImportOut.model_validate({**_year_detail(session, principal, year), "due_dates_moved": moved})


@router.delete("/calendar/{year}", status_code=204, summary="删除平台导入的某年工作日历（平台管理员）")
def delete_calendar_year(
    year: YearPath, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> None:
    calendar.delete_year(session, principal, year)
    service.recompute_due_dates(session, settings)


@router.post("/grants/{grant_id}/transfer", response_model=GrantOut, summary="转移授权（平台管理员或提供方，须填理由）")
def transfer(grant_id: int, body: TransferIn, session: Session = Db, principal: Principal = Who) -> GrantOut:
    grant = service.transfer_grant(
        session,
        principal,
        grant_id,
        department_code=body.department_code,
        reason=body.reason,
        system_name=body.system_name,
        client_id=body.client_id,
    )
    return grant_out(grant)


# ---------------------------------------------------------------- 不予共享 coordination cases


@router.post("/cases", response_model=CaseOut, status_code=201, summary="对不予共享资源提出协调申请（履职需要）")
def open_case(body: CaseIn, session: Session = Db, principal: Principal = Who) -> CaseOut:
    case = cases.open_case(
        session, principal, entry_id=body.entry_id, duty=body.duty, legal_basis=body.legal_basis, items=body.items
    )
    return CaseOut.model_validate(cases.case_out(principal, case))


@router.get("/cases", response_model=list[CaseOut], summary="不予共享协调事项")
def list_cases(
    status: str | None = Query(None, max_length=16, description="open 待协调 / upheld / referred"),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    session: Session = Db,
    principal: Principal = Who,
) -> list[CaseOut]:
    found = cases.list_cases(session, principal, status=status, limit=limit, offset=offset)
    return [CaseOut.model_validate(cases.case_out(principal, c)) for c in found]


@router.get("/cases/{case_id}", response_model=CaseOut, summary="协调事项详情")
def get_case(case_id: int, session: Session = Db, principal: Principal = Who) -> CaseOut:
    return CaseOut.model_validate(cases.case_out(principal, cases.get_case(session, principal, case_id)))


@router.post("/cases/{case_id}/resolve", response_model=CaseOut, summary="办结协调事项（平台管理员）")
def resolve_case(case_id: int, body: CaseResolveIn, session: Session = Db, principal: Principal = Who) -> CaseOut:
    case = cases.resolve_case(session, principal, case_id, decision=body.decision, resolution=body.resolution)
    return CaseOut.model_validate(cases.case_out(principal, case))


# ---------------------------------------------------------------- masking rules


@router.get("/masking-rules", response_model=list[MaskingRuleOut], summary="脱敏规则（各类型及示例）")
def masking_rules(session: Session = Db, principal: Principal = Who) -> list[MaskingRuleOut]:
    return [MaskingRuleOut.model_validate(r) for r in policy.masking_table(session, principal)]


@router.put("/masking-rules", response_model=list[MaskingRuleOut], summary="设置脱敏规则（平台管理员）")
def set_masking_rules(body: MaskingRulesIn, session: Session = Db, principal: Principal = Who) -> list[MaskingRuleOut]:
    config = {k: v.model_dump(exclude_none=True) for k, v in body.rules.items()}
    return [MaskingRuleOut.model_validate(r) for r in policy.set_masking_rules(session, principal, config)]
