"""Chinese labels of the audit trail's codes, for the pages and the exports.

An action without a label here is shown by its code: the trail never hides what it holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

# China keeps no daylight saving time: a fixed offset is Asia/Shanghai.
BEIJING = timezone(timedelta(hours=8), "北京时间")
STORED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

ACTION_LABELS: dict[str, str] = {
    # catalog
    "catalog.entry.create": "新建目录",
    "catalog.entry.update": "修改目录",
    "catalog.entry.submit": "提交审核",
    "catalog.entry.review": "审核目录",
    "catalog.entry.approve": "审核通过",
    "catalog.entry.reject": "审核驳回",
    "catalog.entry.revoke": "申请撤销",
    "catalog.entry.read": "查看目录",
    "catalog.import": "导入目录",
    "catalog.export": "导出目录",
    "catalog.class.create": "新建分类",
    "catalog.class.update": "修改分类",
    # organisations and identity
    "department.create": "新建部门",
    "department.update": "修改部门",
    "department.import": "导入部门",
    "user.create": "新建用户",
    "user.update": "修改用户",
    "user.password": "修改密码",
    "user.password_reset": "重置密码",
    "user.activate": "启用用户",
    "user.deactivate": "停用用户",
    "client.create": "新建应用",
    "client.update": "修改应用",
    "client.secret_reset": "重置应用密钥",
    "auth.login": "登录",
    "auth.login_failed": "登录失败",
    "auth.logout": "退出登录",
    "auth.token": "获取令牌",
    "auth.client_token": "应用获取令牌",
    # the trail itself
    "audit.search": "检索审计日志",
    "audit.read": "查看审计记录",
    "audit.export": "导出审计日志",
    "audit.verify": "校验审计日志",
    "audit.checkpoint": "签署检查点",
}

# Groups offered as prefix filters ("catalog." matches every catalog action).
ACTION_GROUPS: dict[str, str] = {
    "catalog.": "目录",
    "department.": "部门",
    "user.": "用户",
    "client.": "应用系统",
    "auth.": "登录认证",
    "audit.": "审计日志",
}

OUTCOME_LABELS = {"allowed": "允许", "refused": "拒绝"}
ACTOR_KIND_LABELS = {
    "user": "用户",
    "client": "应用",
    "node": "节点",
    "anonymous": "匿名",
    "system": "系统",
}


def action_label(code: str) -> str:
    return ACTION_LABELS.get(code, code)


def outcome_label(code: str) -> str:
    return OUTCOME_LABELS.get(code, code)


def actor_kind_label(code: str) -> str:
    return ACTOR_KIND_LABELS.get(code, code)


def local_time(stored: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored UTC time (``2026-11-22T01:36:28.123456Z``) in Beijing time."""
    if not stored:
        return ""
    try:
        moment = datetime.strptime(stored, STORED_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # not written by the platform: show it as it is
        return stored
    return moment.astimezone(BEIJING).strftime(fmt)
