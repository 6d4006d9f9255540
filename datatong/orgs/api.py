"""HTTP API of organisations and identity (/api/v1/auth, /departments, /users, /clients)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from datatong.orgs import security, service
from datatong.orgs.schemas import (
    ClientCreated,
    ClientIn,
    ClientOut,
    ClientTokenIn,
    DepartmentIn,
    DepartmentOut,
    DepartmentUpdate,
    LoginIn,
    MeOut,
    PasswordChangeIn,
    SecurityPolicyIn,
    SecurityPolicyOut,
    TokenOut,
    TotpCodeIn,
    TotpDisableIn,
    TotpSetupOut,
    TotpStatusOut,
    UserIn,
    UserOut,
    UserUpdate,
)
from datatong.orgs.service import Principal
from datatong.web.deps import get_enrolling_principal, get_principal, get_session
from datatong.web.ratelimit import check_login_rate

router = APIRouter(prefix="/api/v1", tags=["组织与身份 orgs"])
Db = Depends(get_session)
Who = Depends(get_principal)


def _authenticated(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise service.Unauthenticated()


Enroller = Depends(get_enrolling_principal)


def _no_store(response: Response) -> None:
    """Tokens and secrets must not be kept by caches (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


@router.post(
    "/auth/token",
    response_model=TokenOut,
    summary="用户名密码（及动态验证码）换取访问令牌",
    description=(
        "已启用双因素认证的账号须同时提交 otp（缺少时返回 auth.otp_required，错误或重放返回 auth.otp_invalid）。"
        "角色要求双因素认证而尚未绑定时返回 403 auth.totp_enrollment_required，details 中附一个 10 分钟内"
        "只能用于 /api/v1/me/totp 的绑定令牌。连续失败 5 次锁定账号（423 auth.account_locked，Retry-After）；"
        "每个来源地址和账号每分钟限 10 次（429 rate_limited）。"
    ),
)
def login(body: LoginIn, request: Request, response: Response, session: Session = Db) -> TokenOut:
    settings = request.app.state.settings
    check_login_rate(request, body.username)
    user = security.password_login(session, settings, body.username, body.password, body.otp)
    token, ttl = service.issue_token(
        settings.secret_key, str(user.id), "user", user.token_version, settings.access_token_minutes
    )
    _no_store(response)
    return TokenOut(access_token=token, expires_in=ttl)


@router.post("/auth/client-token", response_model=TokenOut, summary="应用凭据换取短期令牌（client credentials）")
def client_token(body: ClientTokenIn, request: Request, response: Response, session: Session = Db) -> TokenOut:
    settings = request.app.state.settings
    check_login_rate(request, body.client_id, kind="client")
    _no_store(response)
    if body.grant_type != "client_credentials":
        raise service.invalid(
            "auth.grant_type_invalid",
            "grant_type 须为 client_credentials",
            "grant_type must be client_credentials",
            "grant_type",
        )
    app = security.client_login(session, body.client_id, body.client_secret)
    token, ttl = service.issue_token(settings.secret_key, app.client_id, "client", 0, settings.client_token_minutes)
    return TokenOut(access_token=token, expires_in=ttl)


@router.get("/me", response_model=MeOut, summary="当前身份")
def me(principal: Principal = Who) -> MeOut:
    _authenticated(principal)
    return MeOut(
        kind=principal.kind,
        username=principal.username,
        display_name=principal.display_name,
        role=principal.role,
        department_id=principal.department_id,
        department_code=principal.department_code,
    )


@router.get("/me/totp", response_model=TotpStatusOut, summary="双因素认证（TOTP）状态")
def totp_status(session: Session = Db, principal: Principal = Enroller) -> TotpStatusOut:
    status = security.totp_status(session, principal)
    return TotpStatusOut(**status)


@router.post(
    "/me/totp",
    response_model=TotpSetupOut,
    summary="开始绑定身份验证器（返回密钥、otpauth 地址和二维码）",
    description="也接受登录时得到的绑定令牌。密钥只返回这一次；用验证码确认后才生效。",
)
def totp_start(
    request: Request, response: Response, session: Session = Db, principal: Principal = Enroller
) -> TotpSetupOut:
    setup = security.start_totp(session, request.app.state.settings, principal)
    _no_store(response)
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.uri, qr_code=setup.qr_data_uri)


@router.post("/me/totp/confirm", response_model=TotpStatusOut, summary="用验证码确认绑定，启用双因素认证")
def totp_confirm(
    body: TotpCodeIn, request: Request, session: Session = Db, principal: Principal = Enroller
) -> TotpStatusOut:
    security.confirm_totp(session, request.app.state.settings, principal, body.code)
    return TotpStatusOut(**security.totp_status(session, principal))


@router.delete("/me/totp", response_model=TotpStatusOut, summary="停用双因素认证（需当前密码和验证码）")
def totp_disable(
    body: TotpDisableIn, request: Request, session: Session = Db, principal: Principal = Who
) -> TotpStatusOut:
    security.disable_totp(session, request.app.state.settings, principal, body.password, body.code)
    return TotpStatusOut(**security.totp_status(session, principal))


@router.post(
    "/me/password",
    response_model=TokenOut,
    summary="修改自己的密码（返回新令牌，其他会话和令牌随即失效）",
)
def change_password(
    body: PasswordChangeIn, request: Request, response: Response, session: Session = Db, principal: Principal = Who
) -> TokenOut:
    settings = request.app.state.settings
    user = security.change_own_password(session, principal, body.current_password, body.new_password)
    token, ttl = service.issue_token(
        settings.secret_key, str(user.id), "user", user.token_version, settings.access_token_minutes
    )
    _no_store(response)
    return TokenOut(access_token=token, expires_in=ttl)


@router.get("/security/policy", response_model=SecurityPolicyOut, summary="安全策略（平台管理员）")
def security_policy(session: Session = Db, principal: Principal = Who) -> SecurityPolicyOut:
    service.require_platform_admin(principal)
    return SecurityPolicyOut(**security.get_policy(session))


@router.put(
    "/security/policy",
    response_model=SecurityPolicyOut,
    summary="修改安全策略（平台管理员）：哪些角色必须启用双因素认证",
)
def update_security_policy(
    body: SecurityPolicyIn, session: Session = Db, principal: Principal = Who
) -> SecurityPolicyOut:
    return SecurityPolicyOut(**security.update_policy(session, principal, body.totp_required_roles))


@router.get("/departments", response_model=list[DepartmentOut], summary="部门列表")
def departments(session: Session = Db, principal: Principal = Who) -> list[DepartmentOut]:
    _authenticated(principal)
    return [DepartmentOut.model_validate(d) for d in service.list_departments(session)]


@router.post("/departments", response_model=DepartmentOut, status_code=201, summary="新建部门（平台管理员）")
def create_department(body: DepartmentIn, session: Session = Db, principal: Principal = Who) -> DepartmentOut:
    dept = service.create_department(
        session, principal, body.code, body.name, body.level, body.parent_code, body.short_name, body.contact
    )
    return DepartmentOut.model_validate(dept)


@router.get("/departments/{department_id}", response_model=DepartmentOut, summary="部门详情")
def department(department_id: int, session: Session = Db, principal: Principal = Who) -> DepartmentOut:
    _authenticated(principal)
    return DepartmentOut.model_validate(service.get_department(session, department_id))


@router.patch("/departments/{department_id}", response_model=DepartmentOut, summary="修改部门信息")
def update_department(
    department_id: int, body: DepartmentUpdate, session: Session = Db, principal: Principal = Who
) -> DepartmentOut:
    _authenticated(principal)
    dept = service.update_department(session, principal, department_id, **body.model_dump())
    return DepartmentOut.model_validate(dept)


@router.get("/users", response_model=list[UserOut], summary="用户列表（部门管理员只见本部门）")
def users(session: Session = Db, principal: Principal = Who) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in service.list_users(session, principal)]


@router.post("/users", response_model=UserOut, status_code=201, summary="新建用户")
def create_user(body: UserIn, session: Session = Db, principal: Principal = Who) -> UserOut:
    user = service.create_user(
        session, principal, body.username, body.display_name, body.password, body.role, body.department_code
    )
    return UserOut.model_validate(user)


@router.get("/users/{user_id}", response_model=UserOut, summary="用户详情")
def user(user_id: int, session: Session = Db, principal: Principal = Who) -> UserOut:
    return UserOut.model_validate(service.managed_user(session, principal, user_id))


@router.patch("/users/{user_id}", response_model=UserOut, summary="修改用户（含停用、重置密码）")
def update_user(user_id: int, body: UserUpdate, session: Session = Db, principal: Principal = Who) -> UserOut:
    service.managed_user(session, principal, user_id)
    user = service.update_user(session, principal, user_id, **body.model_dump())
    return UserOut.model_validate(user)


@router.get("/clients", response_model=list[ClientOut], summary="业务系统应用凭据列表")
def clients(session: Session = Db, principal: Principal = Who) -> list[ClientOut]:
    return [ClientOut.model_validate(c) for c in service.list_clients(session, principal)]


@router.post("/clients", response_model=ClientCreated, status_code=201, summary="注册业务系统，返回一次性密钥")
def create_client(body: ClientIn, session: Session = Db, principal: Principal = Who) -> ClientCreated:
    app, secret = service.create_client(session, principal, body.name, body.department_code)
    return ClientCreated(**ClientOut.model_validate(app).model_dump(), client_secret=secret)
