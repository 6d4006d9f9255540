"""API shapes of departments, users and client applications."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DepartmentIn(BaseModel):
    code: str = Field(max_length=32, description="部门代码")
    name: str = Field(max_length=200, description="部门名称")
    short_name: str | None = Field(default=None, max_length=100)
    level: str = Field(max_length=16, description="national/province/city/district（国家/省/市/区县）")
    parent_code: str | None = Field(default=None, max_length=32, description="上级部门代码")
    contact: str | None = Field(default=None, max_length=200)


class DepartmentUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    short_name: str | None = Field(default=None, max_length=100)
    contact: str | None = Field(default=None, max_length=200)


class DepartmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    short_name: str | None
    level: str
    parent_id: int | None
    contact: str | None


class UserIn(BaseModel):
    username: str = Field(max_length=64)
    display_name: str = Field(max_length=100)
    password: str = Field(max_length=200)
    role: str = Field(max_length=32, description="platform_admin/dept_admin/data_officer/auditor")
    department_code: str | None = Field(default=None, max_length=32, description="所属部门代码；默认与当前管理员相同")


class UserUpdate(BaseModel):
    display_name: str | None = Field(default=None, max_length=100)
    password: str | None = Field(default=None, max_length=200)
    role: str | None = Field(default=None, max_length=32)
    is_active: bool | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    display_name: str
    role: str
    department_id: int
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=200)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class ClientIn(BaseModel):
    name: str = Field(max_length=200, description="业务系统名称")
    department_code: str | None = Field(default=None, max_length=32)


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    client_id: str
    name: str
    department_id: int
    is_active: bool
    created_at: datetime


class ClientCreated(ClientOut):
    client_secret: str = Field(description="只显示这一次，请妥善保存")


class ClientTokenIn(BaseModel):
    client_id: str = Field(max_length=64)
    client_secret: str = Field(max_length=200)
    grant_type: str = "client_credentials"


class MeOut(BaseModel):
    kind: str
    username: str
    display_name: str
    role: str
    department_id: int | None
    department_code: str | None
