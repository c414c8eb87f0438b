"""The shadow store's tables, made on first use and upgraded from earlier versions.

`shadow_comparisons`, one row per compared request (or candidate failure),
`shadow_differences`, one row per difference (noisy ones flagged), carrying the comparison's
route and time so the summary is a few GROUP BY queries on either database, with no JSON
functions, and `shadow_drops`, how many copies a route dropped for each reason in each batch
(`gateway.shadow.mirror.DROP_REASONS`; "unknown" for the tallies stored before reasons were).
"""

from __future__ import annotations

import sqlalchemy as sa

_SCHEMA_LOCK = 0x5A4D_0004  # pg_advisory_xact_lock key: "shadow schema", issue 4
UNKNOWN_REASON = "unknown"  # of the drops tallied before the store kept their reasons

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY
metadata = sa.MetaData()
comparisons = sa.Table(
    "shadow_comparisons",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("primary_status", sa.Integer, nullable=False),
    sa.Column("candidate_status", sa.Integer),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("primary_ms", sa.Double, nullable=False),
    sa.Column("candidate_ms", sa.Double),
    sa.Column("error", sa.Text),
    sa.Index("ix_shadow_comparisons_route_at", "route", "at"),
    sa.Index("ix_shadow_comparisons_at", "at"),
)
differences = sa.Table(
    "shadow_differences",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("comparison_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("noisy", sa.Boolean, nullable=False),
    sa.Column("field", sa.Text, nullable=False),  # the path, generalised
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("primary_value", sa.Text),
    sa.Column("candidate_value", sa.Text),
    sa.Index("ix_shadow_differences_route_at", "route", "at"),
)
drops = sa.Table(
    "shadow_drops",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    # The default is what `_upgrade` gives the rows of an older table; it also lets a replica
    # still on the older code insert into an upgraded table during a rolling update.
    sa.Column(
        "reason", sa.String(32), nullable=False, server_default=sa.text(f"'{UNKNOWN_REASON}'")
    ),
    sa.Index("ix_shadow_drops_route_at", "route", "at"),
)


def create(connection: sa.Connection) -> None:
    """Make the tables, or upgrade the ones an earlier version made, in the caller's
    transaction (committed by the caller)."""
    # The schema lock, held to the commit: other stores on the database (replicas; the
    # gateway and its shadow worker) wait, then find the schema made.
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    else:  # pysqlite runs DDL outside a transaction unless one is begun
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    metadata.create_all(connection)
    _upgrade(connection)


def _upgrade(connection: sa.Connection) -> None:
    """Bring the tables an earlier version made up to this schema (under the schema lock)."""
    columns = {column["name"] for column in sa.inspect(connection).get_columns(drops.name)}
    reason = drops.c.reason
    if reason.name not in columns:  # made before drops kept their reasons
        connection.execute(
            sa.text(
                f"ALTER TABLE {drops.name} ADD COLUMN {reason.name}"
                f" {reason.type.compile(connection.dialect)} NOT NULL"
                f" DEFAULT '{UNKNOWN_REASON}'"
            )
        )
