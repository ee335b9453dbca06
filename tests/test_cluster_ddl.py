"""ClickHouse DDL for one server (plain MergeTree, run for real on chDB by every other test) and
for a cluster (ReplicatedMergeTree `_local` tables ON CLUSTER + Distributed tables sharded by
tenant). No ClickHouse cluster runs here: the cluster DDL is checked as text, parsed by
ClickHouse's own parser (chDB's formatQuery), and its Distributed tables are created for real
in chDB with a configured cluster (ON CLUSTER and replication need ClickHouse Keeper, so those
two parts are the only ones not executed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from django.test import override_settings

from gateway.checks import clickhouse_cluster_check
from storage.clickhouse import Store
from storage.schema import (
    LEDGER_TABLE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    PLAIN,
    REFUSALS_TABLE,
    TENANT_TABLES,
    USAGE_TABLE,
    Layout,
    migrations_table_statement,
)

CLUSTER = Layout("gw")


def _statements(layout: Layout) -> list[str]:
    return [statement for migration in MIGRATIONS for statement in migration.statements(layout)]


def _creates(layout: Layout) -> list[str]:
    """The CREATE TABLE statements (the migrations' other steps: ALTERs, views, data)."""
    # (Not the copies migration 5 makes to change a table's partitions: tests/test_storage.py.)
    return [
        statement
        for statement in _statements(layout)
        if statement.startswith("CREATE TABLE") and "__repartitioned" not in statement
    ]


ENGINES = {USAGE_TABLE: "SummingMergeTree", REFUSALS_TABLE: "AggregatingMergeTree"}


def _created_name(statement: str) -> str:
    return re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement).group(1)


def test_plain_layout_creates_one_mergetree_table_per_telemetry_table():
    statements = _creates(PLAIN)
    assert sorted(_created_name(s) for s in statements) == sorted((*TENANT_TABLES, LEDGER_TABLE))
    for statement in statements:
        assert re.search(r"ENGINE = (|Summing|Aggregating)MergeTree\n", statement), statement
        assert "ON CLUSTER" not in statement and "Distributed" not in statement and "Replicated" not in statement
    assert migrations_table_statement(PLAIN).endswith("ENGINE = MergeTree ORDER BY version")


def test_cluster_layout_creates_replicated_local_tables_then_distributed_tables_under_the_same_names():
    statements = _creates(CLUSTER)
    names = [_created_name(s) for s in statements]
    assert names == [name for table in names[::2] for name in (table, table.removesuffix("_local"))]
    assert sorted(names[1::2]) == sorted((*TENANT_TABLES, LEDGER_TABLE))  # inserts and reads keep their names
    for local, distributed in zip(statements[::2], statements[1::2]):
        table = _created_name(distributed)
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS {table}_local ON CLUSTER 'gw' (")
        family = ENGINES.get(table, "MergeTree")
        assert (
            f"ENGINE = Replicated{family}('/clickhouse/tables/{{shard}}/{{database}}/{table}_local', '{{replica}}')"
            in local
        )
        assert distributed == (
            f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER 'gw' AS {table}_local\n"
            f"ENGINE = Distributed('gw', currentDatabase(), '{table}_local', cityHash64(TenantId))"
        )


def test_cluster_local_tables_have_exactly_the_plain_tables_columns_keys_and_ttl():
    plain = {_created_name(s): s for s in _creates(PLAIN)}
    for local in _creates(CLUSTER)[::2]:
        table = _created_name(local).removesuffix("_local")
        family = ENGINES.get(table, "MergeTree")
        engine = CLUSTER.replicated_engine(f"{table}_local").replace("ReplicatedMergeTree", f"Replicated{family}")
        as_plain = local.replace(f"{table}_local ON CLUSTER 'gw'", table, 1).replace(engine, family, 1)
        assert as_plain == plain[table]


def test_cluster_steps_alter_local_and_distributed_tables_and_views_read_local_tables():
    steps = [s for s in _statements(CLUSTER) if not s.startswith("CREATE TABLE")]
    assert "ALTER TABLE otel_logs_local ON CLUSTER 'gw' ADD COLUMN IF NOT EXISTS TimestampTime" in steps[0]
    assert "ALTER TABLE otel_logs ON CLUSTER 'gw' ADD COLUMN IF NOT EXISTS TimestampTime" in steps[1]
    assert steps[2].startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS otel_traces_trace_id_ts_mv ON CLUSTER 'gw' TO otel_traces_trace_id_ts_local"
    )
    assert "FROM otel_traces_local " in steps[2]


def test_migrations_table_is_one_replicated_copy_on_every_server():
    statement = migrations_table_statement(CLUSTER)
    assert statement.startswith(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ON CLUSTER 'gw' ")
    # No {shard} in the path: every server of every shard shares the applied versions.
    assert (
        f"ReplicatedMergeTree('/clickhouse/tables/{{database}}/{MIGRATIONS_TABLE}', '{{shard}}-{{replica}}')"
        in statement
    )


def test_cluster_names_that_could_break_the_ddl_are_refused():
    assert Layout("{cluster}").on_cluster == " ON CLUSTER '{cluster}'"
    for bad in ("gw'; DROP TABLE otel_traces; --", "a b"):
        with pytest.raises(ValueError, match="invalid ClickHouse cluster name"):
            Layout(bad)
    with pytest.raises(ValueError, match="needs a ClickHouse server"):
        Store("chdb:///tmp/x", cluster="gw")
    assert Store("http://localhost:8123/db", cluster="gw").layout == CLUSTER
    assert Store("http://localhost:8123/db", cluster="").layout == PLAIN


def test_system_check_reports_a_cluster_on_embedded_chdb():
    with override_settings(GATEWAY_CLICKHOUSE_CLUSTER="gw", GATEWAY_CLICKHOUSE_URL="chdb:///tmp/x"):
        assert [problem.id for problem in clickhouse_cluster_check(None)] == ["gateway.E002"]
    with override_settings(GATEWAY_CLICKHOUSE_CLUSTER="gw'", GATEWAY_CLICKHOUSE_URL="http://h:8123/db"):
        assert [problem.id for problem in clickhouse_cluster_check(None)] == ["gateway.E001"]
    with override_settings(GATEWAY_CLICKHOUSE_CLUSTER="gw", GATEWAY_CLICKHOUSE_URL="http://h:8123/db"):
        assert clickhouse_cluster_check(None) == []


_CHDB_SCRIPT = textwrap.dedent("""
    import json, re, sys, chdb
    data_dir, config, statements = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    connection = chdb.connect(f"file:{data_dir}?config-file={config}")
    cursor = connection.cursor()
    def rows(sql):
        cursor.execute(sql)
        return cursor.fetchall()
    # ClickHouse's own parser accepts every statement as written.
    for statement in statements:
        rows("SELECT formatQuery($gwddl$" + statement + "$gwddl$)")
    # Executed without the two parts that need Keeper: ON CLUSTER and replication.
    for statement in statements:
        statement = statement.replace(" ON CLUSTER 'gw'", "")
        rows(re.sub(r"Replicated(\\w*)MergeTree\\('[^']*', '[^']*'\\)", r"\\1MergeTree", statement))
    tables = {name: [engine, full] for name, engine, full in rows(
        "SELECT name, engine, engine_full FROM system.tables WHERE database = currentDatabase()")}
    columns = {name: [list(r[:2]) for r in rows(f"DESCRIBE TABLE {name}")] for name in tables}
    print(json.dumps({"tables": tables, "columns": columns}))
""")


@pytest.mark.slow
def test_cluster_ddl_is_valid_clickhouse_and_distributed_tables_mirror_their_local_tables(tmp_path):
    config = tmp_path / "cluster.xml"
    config.write_text(
        "<clickhouse><remote_servers><gw>"
        "<shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard>"
        "<shard><replica><host>127.0.0.2</host><port>9000</port></replica></shard>"
        "</gw></remote_servers>"
        "<macros><shard>01</shard><replica>r1</replica></macros></clickhouse>"
    )
    # Everything but copying data, which needs the cluster's servers.
    statements = [migrations_table_statement(CLUSTER), *(s for s in _statements(CLUSTER) if not s.startswith("INSERT"))]
    out = subprocess.run(
        [sys.executable, "-c", _CHDB_SCRIPT, str(tmp_path / "chdb"), str(config), json.dumps(statements)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for table in TENANT_TABLES:
        assert result["tables"][table] == [
            "Distributed",
            f"Distributed('gw', 'default', '{table}_local', cityHash64(TenantId))",
        ]
        assert result["tables"][f"{table}_local"][0] == ENGINES.get(table, "MergeTree")
        assert result["columns"][table] == result["columns"][f"{table}_local"]
        assert result["columns"][table][0] == ["TenantId", "LowCardinality(String)"]
