"""Code lists of the catalog, with the Chinese labels data officers know.

API values are short English codes; Excel and the UI use the Chinese labels; both
directions go through these tables.
"""

from __future__ import annotations

CATALOG_TYPES = {"1": "基础信息资源", "2": "主题信息资源", "3": "部门信息资源"}

SHARE_TYPES = {"unconditional": "无条件共享", "conditional": "有条件共享", "none": "不予共享"}
SHARE_METHODS = {"platform": "共享平台", "email": "邮件", "media": "介质"}
SHARE_SUBTYPES = {"interface": "接口", "table": "库表", "file": "文件"}

FORMAT_CATEGORIES = {
    "file": "电子文件",
    "spreadsheet": "电子表格",
    "database": "数据库",
    "image": "图形图像",
    "media": "流媒体",
    "selfdesc": "自描述格式",
    "service": "服务接口",
}

UPDATE_CYCLES = {
    "realtime": "实时",
    "daily": "每日",
    "weekly": "每周",
    "monthly": "每月",
    "quarterly": "每季度",
    "halfyearly": "每半年",
    "yearly": "每年",
    "irregular": "不定时",
}

DATA_TYPES = {
    "C": "字符型",
    "N": "数值型",
    "Y": "货币型",
    "D": "日期型",
    "T": "日期时间型",
    "L": "逻辑型",
    "M": "备注型",
    "G": "通用型",
    "B": "双精度型",
    "I": "整型",
    "F": "浮点型",
}
# Types whose width the officer must state (character and numeric with a width).
LENGTH_REQUIRED = {"C", "N", "Y", "B", "F"}
# Types with a fixed width, filled in when left empty (D: yyyymmdd, T: yyyymmddhhmmss).
FIXED_LENGTH = {"D": 8, "T": 14, "L": 1, "I": 4}

SENSITIVITIES = {"public": "公开", "internal": "内部", "sensitive": "敏感", "personal": "个人信息"}

STATUSES = {
    "draft": "草稿",
    "pending_publish": "发布待审核",
    "published": "已发布",
    "publish_rejected": "发布已驳回",
    "pending_revoke": "撤销待审核",
    "revoked": "已撤销",
}

CLASS_LEVELS = {1: "类", 2: "项", 3: "目", 4: "细目"}
# Width of the code at each level; 细目 codes may be of any width.
CLASS_CODE_WIDTH = {1: 1, 2: 2, 3: 3}

# The classification seeded on a new platform (the platform admin may edit it).
SEED_CLASSES: dict[str, tuple[str, list[str]]] = {
    "1": ("基础信息资源", ["人口", "法人", "自然资源和空间地理", "社会信用", "电子证照"]),
    "2": (
        "主题信息资源",
        [
            "公共服务",
            "健康保障",
            "社会保障",
            "食品药品安全",
            "安全生产",
            "价格监管",
            "能源安全",
            "信用体系",
            "城乡建设",
            "社区治理",
            "生态环保",
            "应急维稳",
        ],
    ),
    "3": ("部门信息资源", []),
}

FACETS = {
    "provider": "提供方",
    "class": "资源分类",
    "share_type": "共享类型",
    "update_cycle": "更新周期",
    "format": "资源格式",
    "open": "是否开放",
}


def label(table: dict[str, str], value: str | None) -> str:
    if value is None:
        return ""
    return table.get(value, value)


def from_label(table: dict[str, str], text: str | None) -> str | None:
    """Accept either the code or its Chinese label (Excel cells hold labels)."""
    if text is None:
        return None
    text = str(text).strip()
    if not text:
        return None
    if text in table:
        return text
    for code, name in table.items():
        if name == text:
            return code
    return None
