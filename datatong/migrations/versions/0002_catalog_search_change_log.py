"""catalog search: change log feeding the in-memory search index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:00:00

Every insert, update or delete of a catalog entry appends the entry ids to
``catalog_change`` (by trigger, in the writer's transaction, so nothing can change the
catalog without the log knowing). Each API process keeps an in-memory index for fast
counts and facets (datatong/catalog/search.py) and applies the log before answering.
``catalog_change_ctl`` holds the database's identity (a new id means "reload
everything") and, on SQLite, a flag with which the bulk import logs one id range
instead of one row per entry.
"""

import uuid

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE = [
    "CREATE TABLE catalog_change (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry_from INTEGER, entry_to INTEGER)",
    "CREATE TABLE catalog_change_ctl (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "instance TEXT NOT NULL, bulk INTEGER NOT NULL DEFAULT 0)",
    "CREATE TRIGGER catalog_change_ins AFTER INSERT ON catalog_entry "
    "WHEN (SELECT bulk FROM catalog_change_ctl) = 0 BEGIN "
    "INSERT INTO catalog_change(entry_from, entry_to) VALUES (NEW.id, NEW.id); END",
    "CREATE TRIGGER catalog_change_upd AFTER UPDATE ON catalog_entry BEGIN "
    "INSERT INTO catalog_change(entry_from, entry_to) VALUES (NEW.id, NEW.id); END",
    "CREATE TRIGGER catalog_change_del AFTER DELETE ON catalog_entry BEGIN "
    "INSERT INTO catalog_change(entry_from, entry_to) VALUES (OLD.id, OLD.id); END",
]

# PostgreSQL: statement-level triggers with transition tables, so a COPY of 10,000
# entries logs one id range. ``txid`` lets readers see a change only once every
# transaction that might precede it in commit order has finished.
POSTGRES = [
    # An identity column, not a serial: its sequence is private to the log.
    "CREATE TABLE catalog_change (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, entry_from INTEGER, "
    "entry_to INTEGER, txid xid8 NOT NULL DEFAULT pg_current_xact_id())",
    "CREATE INDEX ix_catalog_change_txid ON catalog_change (txid)",
    "CREATE TABLE catalog_change_ctl (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "instance TEXT NOT NULL, bulk INTEGER NOT NULL DEFAULT 0)",
    """CREATE FUNCTION catalog_change_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO catalog_change(entry_from, entry_to) VALUES (NULL, NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO catalog_change(entry_from, entry_to)
            SELECT min(id), max(id) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO catalog_change(entry_from, entry_to) SELECT id, id FROM new_rows;
    ELSE
        INSERT INTO catalog_change(entry_from, entry_to) SELECT id, id FROM old_rows;
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER catalog_change_ins AFTER INSERT ON catalog_entry "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_log()",
    "CREATE TRIGGER catalog_change_upd AFTER UPDATE ON catalog_entry "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_log()",
    "CREATE TRIGGER catalog_change_del AFTER DELETE ON catalog_entry "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_log()",
    "CREATE TRIGGER catalog_change_trunc AFTER TRUNCATE ON catalog_entry "
    "FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_log()",
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE if sqlite else POSTGRES:
        op.execute(statement)
    op.execute(f"INSERT INTO catalog_change_ctl (id, instance, bulk) VALUES (1, '{uuid.uuid4().hex}', 0)")


def downgrade() -> None:
    for name in ("catalog_change_ins", "catalog_change_upd", "catalog_change_del"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON catalog_entry")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS catalog_change_trunc ON catalog_entry")
        op.execute("DROP FUNCTION IF EXISTS catalog_change_log()")
    op.execute("DROP TABLE IF EXISTS catalog_change_ctl")
    op.execute("DROP TABLE IF EXISTS catalog_change")
