"""``datatong demo``: a fictional city (清源市) with departments, users and a catalog.

Seeding is idempotent: when the city government already exists the database is left
alone and only the credentials are printed again, so a restart is fast. The entry
generator is shared with the catalog benchmark (bench/catalog.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from faker import Faker
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong import demodata as vocab_data
from datatong.catalog import bulk
from datatong.catalog import service as catalog
from datatong.catalog import vocab as catalog_vocab
from datatong.catalog.models import CatalogClass, CatalogEntry
from datatong.catalog.schemas import EntryIn, ItemIn
from datatong.db import session_scope
from datatong.orgs import service as orgs
from datatong.orgs.models import Department, Role
from datatong.orgs.service import Principal
from datatong.settings import Settings

# The operator at the command line: trusted like a platform admin, but no user row.
CLI = Principal("user", None, "cli", "命令行", Role.PLATFORM_ADMIN, None)

FORMATS: list[tuple[str, list[str], int]] = [
    # (category, types, weight)
    ("database", ["PostgreSQL table", "MySQL table", "达梦数据库表", "Oracle table"], 45),
    ("service", ["REST", "WebService"], 20),
    ("spreadsheet", ["xlsx", "csv"], 15),
    ("file", ["pdf", "ofd", "docx"], 10),
    ("selfdesc", ["json", "xml"], 6),
    ("image", ["jpg", "tif"], 3),
    ("media", ["mp4"], 1),
]
CYCLES = [
    ("realtime", 10),
    ("daily", 30),
    ("weekly", 8),
    ("monthly", 20),
    ("quarterly", 8),
    ("halfyearly", 3),
    ("yearly", 13),
    ("irregular", 8),
]
# Share of demo entries per status; the rest are published. Drafts and pending
# reviews give the review queue and the officers' work lists something to show.
STATUS_MIX = [("draft", 0.06), ("pending_publish", 0.06), ("publish_rejected", 0.02)]
REJECT_REASONS = [
    "共享条件表述不清，请补充使用范围",
    "信息项缺少长度定义，请完善后重新提交",
    "分类选择有误，请改为对应基础信息资源分类",
]


@dataclass(frozen=True)
class Resource:
    """One resource template of a department (see demodata)."""

    dept: str
    name: str
    class_code: str
    keywords: str
    items: tuple[tuple[str, bool], ...]  # (item name, is authoritative)
    share: str  # u / c / n
    open_hint: bool
    basis: str | None  # 不予共享依据


def resources() -> list[Resource]:
    """Every resource template of the city, departments then districts."""
    out: list[Resource] = []
    rows = [(code, res) for code, _, _, res in vocab_data.DEPARTMENTS]
    rows += [(code, res) for code, _, res in vocab_data.DISTRICTS]
    for code, templates in rows:
        for name, cls, keywords, items, share in templates:
            parsed = tuple((i.rstrip("*"), i.endswith("*")) for i in items.split(","))
            basis = share[1:] if share.startswith("n") else None
            out.append(Resource(code, name, cls, keywords, parsed, share[0], share.endswith("o"), basis))
    return out


def _weighted(rng: random.Random, pairs: list[tuple[Any, int]]) -> Any:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


class EntryFactory:
    """Plausible catalog entries from the resource templates, reproducible from a seed."""

    def __init__(self, seed: int = 2026) -> None:
        self.rng = random.Random(seed)
        faker = Faker("zh_CN")
        faker.seed_instance(seed)
        # A few people who maintain metadata; Faker is slow, so draw a pool once.
        self.maintainers = [faker.name() for _ in range(40)]
        self.item_cache: dict[tuple[str, bool], ItemIn] = {}

    def name(self, res: Resource) -> str:
        stem = res.name[:-2] if res.name.endswith("信息") else res.name
        pattern = self.rng.choice(vocab_data.NAME_VARIANTS)
        if "{stem}" in pattern and stem == res.name:
            pattern = "{name}"
        return pattern.format(
            name=res.name,
            stem=stem,
            year=self.rng.choice(vocab_data.YEARS),
            district=self.rng.choice(vocab_data.DISTRICT_NAMES),
        )

    def item(self, name: str, authoritative: bool) -> ItemIn:
        # Items are immutable once built, so equal ones are shared between entries.
        key = (name, authoritative)
        if key not in self.item_cache:
            spec = vocab_data.ITEMS.get(name) or vocab_data.ItemSpec("", "C", 100, "internal")
            self.item_cache[key] = ItemIn(
                name=name,
                code=spec.code or None,
                data_type=spec.data_type,
                length=spec.length,
                sensitivity=spec.sensitivity,
                is_authoritative=authoritative,
            )
        return self.item_cache[key]

    def share(self, res: Resource) -> dict[str, Any]:
        rng = self.rng
        if res.share == "n":
            return {"share_type": "none", "no_share_basis": res.basis, "is_open": False}
        flip = rng.random() < 0.15
        kind = (
            {"u": "conditional", "c": "unconditional"}[res.share]
            if flip
            else {"u": "unconditional", "c": "conditional"}[res.share]
        )
        method = "platform" if rng.random() < 0.92 else rng.choice(["email", "media"])
        subtype = {
            "platform": rng.choice(["interface", "interface", "table", "file"]),
            "email": "file",
            "media": "file",
        }[method]
        is_open = rng.random() < (0.62 if res.open_hint else 0.03)
        return {
            "share_type": kind,
            "share_method": method,
            "share_subtype": subtype,
            "share_condition": rng.choice(vocab_data.SHARE_CONDITIONS) if kind == "conditional" else None,
            "is_open": is_open,
            "open_condition": rng.choice(vocab_data.OPEN_CONDITIONS) if is_open else None,
        }

    def make(self, res: Resource, provider_code: str, provider_name: str, dept_class: str, short_name: str) -> EntryIn:
        rng = self.rng
        name = self.name(res)
        items = [self.item(n, a) for n, a in res.items]
        if rng.random() < 0.3:
            items.append(self.item(rng.choice(["更新时间", "备注", "所属区划", "状态"]), False))
            items = list({i.name: i for i in items}.values())
        category, types, _ = _weighted(rng, [(f, f[2]) for f in FORMATS])
        cycle = _weighted(rng, CYCLES)
        unit = rng.choice(vocab_data.UNITS.get(res.dept, ["办公室", "信息中心", "综合处"]))
        purpose = rng.choice(vocab_data.PURPOSES.get(res.class_code, vocab_data.DEFAULT_PURPOSES))
        summary = (
            f"{name}，由{short_name}{unit}负责采集和维护，包括"
            f"{'、'.join(i.name for i in items)}等{len(items)}个信息项，"
            f"{catalog_vocab.UPDATE_CYCLES[cycle]}更新，可用于{purpose}。"
        )
        fields: dict[str, Any] = dict(
            name=name,
            class_code=res.class_code if rng.random() < 0.6 else dept_class,
            provider_code=provider_code,
            provider_unit=unit,
            summary=summary,
            keywords=res.keywords,
            format_category=category,
            format_type=rng.choice(types),
            update_cycle=cycle,
            release_date=date(2021, 1, 1) + timedelta(days=rng.randrange(1800)),
            related_codes=None,
            source_system=f"{short_name}{unit}业务系统",
            online_url=None,
            service_info=None,
            metadata_maintainer=rng.choice(self.maintainers),
            code=None,
            items=items,
            share_condition=None,
            no_share_basis=None,
            share_method=None,
            share_subtype=None,
            open_condition=None,
        )
        fields.update(self.share(res))
        return EntryIn.model_construct(**fields)


# ---------------------------------------------------------------- seeding


def seed_demo(
    settings: Settings, entries: int = 2000, console: Console | None = None, url: str = "http://127.0.0.1:8000"
) -> bool:
    """Seed the demo city unless it is there; returns True when it seeded."""
    from datatong.app import prepare_database
    from datatong.exchange.demo import capture_some, seed_exchange
    from datatong.sharing.demo import seed_sharing
    from datatong.sharing.jobs import run_all

    console = console or Console(stderr=True)
    prepare_database(settings)
    with session_scope(settings.database_url) as session:
        if session.scalar(select(Department.id).where(Department.code == vocab_data.GOV_CODE)):
            console.print(f"[green]演示数据已存在[/green]（{vocab_data.CITY}），直接使用。")
            _print_credentials(console, url)
            return False
    with console.status(f"正在生成演示城市 {vocab_data.CITY} …"), session_scope(settings.database_url) as session:
        depts = seed_departments(session)
        _seed_users(session)
        counts = seed_entries(session, depts, entries)
    with console.status("正在生成共享申请与授权 …"), session_scope(settings.database_url) as session:
        applications = seed_sharing(session, settings)
    with console.status("正在接入演示数据源与订阅 …"), session_scope(settings.database_url) as session:
        exchange_entry = seed_exchange(session, settings)
    if exchange_entry:
        capture_some(settings, exchange_entry)
    # Reminders and overdue escalation as the scheduler would run them today.
    run_all(settings.database_url, settings)
    console.print(
        f"[green]已生成演示数据[/green]：{len(depts)} 个部门，{sum(counts.values())} 条目录"
        f"（已发布 {counts.get('published', 0)}，待审核 {counts.get('pending_publish', 0)}），"
        f"{len(applications)} 件共享申请（覆盖申请的各个状态，含逾期）。"
    )
    _print_credentials(console, url)
    return True


def seed_departments(
    session: Session, prefix: str = "", city: str = vocab_data.CITY, with_classes: bool = True
) -> dict[str, Department]:
    """The city government, its departments and districts; codes get ``prefix``.

    With ``with_classes`` each department also gets its 部门信息资源 class (3 + 2 digits).
    """
    gov = orgs.create_department(
        session, CLI, prefix + vocab_data.GOV_CODE, f"{city}人民政府", "city", short_name=f"{city}政府"
    )
    depts = {vocab_data.GOV_CODE: gov}
    for code, name, short, _ in vocab_data.DEPARTMENTS:
        depts[code] = orgs.create_department(
            session, CLI, prefix + code, f"{city}{name}", "city", gov.code, short_name=short
        )
    for code, name, _ in vocab_data.DISTRICTS:
        depts[code] = orgs.create_department(
            session, CLI, prefix + code, f"{city}{name}人民政府", "district", gov.code, short_name=name
        )
    if with_classes:
        seed_department_classes(session, depts)
    return depts


def seed_department_classes(session: Session, depts: dict[str, Department]) -> None:
    """One 项 under 部门信息资源 (3) per department, in template order: 301, 302, …"""
    for code, cls_code in department_class_codes().items():
        if session.scalar(select(CatalogClass.id).where(CatalogClass.code == cls_code)):
            continue
        dept = depts[code]
        catalog.create_class(
            session, CLI, cls_code, dept.short_name or dept.name, f"{dept.name}的部门信息资源", department_id=dept.id
        )


def department_class_codes() -> dict[str, str]:
    codes = [c for c, *_ in vocab_data.DEPARTMENTS] + [c for c, *_ in vocab_data.DISTRICTS]
    return {code: f"3{i:02d}" for i, code in enumerate(codes, start=1)}


def _seed_users(session: Session) -> None:
    for username, (role, dept, display) in vocab_data.DEMO_USERS.items():
        orgs.create_user(session, None, username, display, vocab_data.DEMO_PASSWORD, role, dept)


def seed_entries(session: Session, depts: dict[str, Department], count: int, seed: int = 2026) -> dict[str, int]:
    """About ``count`` entries spread over every department's templates; mixed statuses."""
    factory = EntryFactory(seed)
    templates = resources()
    classes = department_class_codes()
    made: list[EntryIn] = []
    for n in range(count):
        # Round-robin first so every template appears, then at random.
        res = templates[n] if n < len(templates) else factory.rng.choice(templates)
        dept = depts[res.dept]
        made.append(factory.make(res, dept.code, dept.name, classes[res.dept], dept.short_name or dept.name))
    statuses = _assign_statuses(factory.rng, made)
    counts: dict[str, int] = {}
    for status, group in statuses.items():
        if group:
            _import_group(session, depts, group, status)
            counts[status] = len(group)
    return counts


def _assign_statuses(rng: random.Random, made: list[EntryIn]) -> dict[str, list[EntryIn]]:
    """Most entries published; open 人口 entries always are (the anonymous demo search)."""
    groups: dict[str, list[EntryIn]] = {"published": []}
    for entry in made:
        status = "published"
        if not (entry.is_open and "人口" in entry.name):
            roll = rng.random()
            for name, share in STATUS_MIX:
                if roll < share:
                    status = name
                    break
                roll -= share
        groups.setdefault(status, []).append(entry)
    return groups


def _import_group(session: Session, depts: dict[str, Department], group: list[EntryIn], status: str) -> None:
    """Published entries go in as published; the others walk the real life cycle so
    their version history and review queue look like an officer's work."""
    if status == "published":
        bulk.bulk_create(session, CLI, group, status="published", reason="演示数据初始化")
        return
    result = bulk.bulk_create(session, CLI, group, status="draft", reason="演示数据初始化")
    if status == "draft":
        return
    ids = dict(
        session.execute(select(CatalogEntry.code, CatalogEntry.id).where(CatalogEntry.code.in_(result.codes))).all()
    )
    by_id = {d.id: d for d in depts.values()}
    for code in result.codes:
        entry = session.get(CatalogEntry, ids[code])
        assert entry is not None
        officer = _officer_of(by_id[entry.provider_id])
        catalog.transition(session, officer, entry.id, "submit")
        if status == "publish_rejected":
            catalog.transition(session, CLI, entry.id, "reject_publish", REJECT_REASONS[entry.id % len(REJECT_REASONS)])


def _officer_of(dept: Department) -> Principal:
    return Principal(
        "user", None, f"officer-{dept.code}", f"{dept.short_name}数据管理员", Role.DATA_OFFICER, dept.id, dept.code
    )


def _print_credentials(console: Console, url: str) -> None:
    table = Table(title=f"演示账号（{vocab_data.CITY}）", show_lines=False)
    for col in ("用户名", "密码", "角色", "部门"):
        table.add_column(col)
    for username, (role, dept, display) in vocab_data.DEMO_USERS.items():
        table.add_row(username, vocab_data.DEMO_PASSWORD, f"{display}（{role}）", dept)
    console.print(table)
    console.print(f"打开 [bold]{url}[/bold] 登录；匿名用户可浏览向社会开放的目录。")
