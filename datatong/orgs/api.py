"""HTTP API of organisations and identity (/api/v1/auth, /departments, /users, /clients)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from datatong.orgs import service
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
    TokenOut,
    UserIn,
    UserOut,
    UserUpdate,
)
from datatong.orgs.service import Principal
from datatong.web.deps import get_principal, get_session

router = APIRouter(prefix="/api/v1", tags=["组织与身份 orgs"])
Db = Depends(get_session)
Who = Depends(get_principal)


def _authenticated(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise service.Unauthenticated()


@router.post("/auth/token", response_model=TokenOut, summary="用户名密码换取访问令牌")
def login(body: LoginIn, request: Request, session: Session = Db) -> TokenOut:
    settings = request.app.state.settings
    user = service.authenticate(session, body.username, body.password)
    token, ttl = service.issue_token(
        settings.secret_key, str(user.id), "user", user.token_version, settings.access_token_minutes
    )
    return TokenOut(access_token=token, expires_in=ttl)


@router.post("/auth/client-token", response_model=TokenOut, summary="应用凭据换取短期令牌（client credentials）")
def client_token(body: ClientTokenIn, request: Request, session: Session = Db) -> TokenOut:
    settings = request.app.state.settings
    if body.grant_type != "client_credentials":
        raise service.invalid(
            "auth.grant_type_invalid",
            "grant_type 须为 client_credentials",
            "grant_type must be client_credentials",
            "grant_type",
        )
    app = service.authenticate_client(session, body.client_id, body.client_secret)
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
