"""API shapes of departments, users and client applications."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from datatong.apitypes import UtcDateTime


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
    password: str | None = Field(default=None, max_length=200, description="重置密码")
    role: str | None = Field(default=None, max_length=32)
    is_active: bool | None = None
    unlock: bool | None = Field(default=None, description="true：解除登录失败锁定")
    totp_reset: bool | None = Field(default=None, description="true：清除双因素认证（如手机丢失），用户需重新绑定")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    display_name: str
    role: str
    department_id: int
    is_active: bool
    created_at: UtcDateTime
    last_login_at: UtcDateTime | None
    totp_enabled: bool = Field(description="是否已启用双因素认证")
    failed_logins: int = Field(description="连续登录失败次数")
    locked_until: UtcDateTime | None = Field(description="锁定到何时（为空表示未锁定）")


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=200)
    otp: str | None = Field(default=None, max_length=16, description="动态验证码（已启用双因素认证时必填）")


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
    created_at: UtcDateTime


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


class TotpSetupOut(BaseModel):
    secret: str = Field(description="密钥（Base32），只在此时显示，供手工录入身份验证器")
    otpauth_uri: str = Field(description="otpauth:// 地址，身份验证器扫码即得")
    qr_code: str = Field(description="二维码图片（data:image/svg+xml;base64,…）")


class TotpCodeIn(BaseModel):
    code: str = Field(max_length=16, description="身份验证器显示的 6 位验证码")


class TotpDisableIn(BaseModel):
    password: str = Field(max_length=200, description="当前密码")
    code: str = Field(max_length=16, description="身份验证器显示的 6 位验证码")


class TotpStatusOut(BaseModel):
    enabled: bool = Field(description="是否已启用")
    pending: bool = Field(description="已开始绑定、尚待验证码确认")
    required: bool = Field(description="安全策略是否要求本角色启用")


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=200)
    new_password: str = Field(max_length=200)


class SecurityPolicyIn(BaseModel):
    totp_required_roles: list[Annotated[str, Field(max_length=32)]] = Field(
        max_length=8, description="必须启用双因素认证的角色（platform_admin/dept_admin/data_officer/auditor）"
    )


class SecurityPolicyOut(BaseModel):
    totp_required_roles: list[str]
