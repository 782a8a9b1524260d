"""SMG's storage flags: ``--history-backend`` and the postgres/redis ones; oracle refused by name."""

from __future__ import annotations

import pytest

from adapters import cli
from dataplane.config import GatewayConfig, HistoryConfig, WorkerUrl
from dataplane.errors import ConfigError
from dataplane.history import MemoryHistory, NoHistory, make_history
from dataplane.history.postgres import PostgresHistory
from dataplane.history.redis import RedisHistory

WORKER = ["--worker-urls", "grpc://localhost:50051"]
PG_URL = "postgresql://smg:secret@db:5432/smg"


@pytest.fixture(autouse=True)
def _no_postgres_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTGRES_DB_URL", raising=False)


def test_defaults_match_smg() -> None:
    history = cli.parse_launch(WORKER).history
    assert history == HistoryConfig()
    assert (history.backend, history.postgres_db_url, history.postgres_pool_max_size) == ("memory", None, 16)
    assert (history.redis_url, history.redis_pool_max_size, history.redis_retention_days) == (
        "redis://localhost:6379",
        16,
        30,
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--history-backend", "none"], HistoryConfig(backend="none")),
        (["--history-backend", "postgres", "--postgres-db-url", PG_URL, "--postgres-pool-max-size", "4"],
         HistoryConfig(backend="postgres", postgres_db_url=PG_URL, postgres_pool_max_size=4)),
        (["--history-backend", "postgres", "--postgres-db-url", PG_URL, "--postgres-pool-max", "5"],
         HistoryConfig(backend="postgres", postgres_db_url=PG_URL, postgres_pool_max_size=5)),
        (["--history-backend", "redis", "--redis-url", "redis://r:1/2", "--redis-pool-max-size", "3",
          "--redis-retention-days", "-1"],
         HistoryConfig(backend="redis", redis_url="redis://r:1/2", redis_pool_max_size=3,
                       redis_retention_days=-1)),
        (["--history-backend", "redis", "--redis-pool-max", "2", "--redis-retention-days", "7"],
         HistoryConfig(backend="redis", redis_pool_max_size=2, redis_retention_days=7)),
    ],
)  # fmt: skip
def test_launch_flags(flags: list[str], expected: HistoryConfig) -> None:
    assert cli.parse_launch([*WORKER, *flags]).history == expected


def test_postgres_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_DB_URL", PG_URL)
    assert cli.parse_launch([*WORKER, "--history-backend", "postgres"]).history.postgres_db_url == PG_URL
    flag = "postgresql://other@h/db"
    history = cli.parse_launch([*WORKER, "--history-backend", "postgres", "--postgres-db-url", flag]).history
    assert history.postgres_db_url == flag  # the flag wins


@pytest.mark.parametrize("prefix", ["", "router-"])
def test_serve_takes_them_for_the_router(prefix: str) -> None:
    plan = cli.parse_serve(
        [
            "--backend",
            "reference",
            f"--{prefix}history-backend",
            "redis",
            f"--{prefix}redis-url",
            "redis://r:9/0",
        ]
    )
    assert (plan.gateway.history.backend, plan.gateway.history.redis_url) == ("redis", "redis://r:9/0")
    assert list(plan.engine.extra_args) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--history-backend", "oracle"],
         "smg: history backend oracle is not supported yet; supported: memory, none, postgres, redis\n"),
        (["--oracle-dsn", "x"], "smg: --oracle-dsn is not supported yet\n"),
        (["--oracle-wallet-path", "/w"], "smg: --oracle-wallet-path is not supported yet\n"),
        (["--history-backend", "postgres"],
         "smg: history backend postgres needs --postgres-db-url (or POSTGRES_DB_URL)\n"),
        (["--history-backend", "postgres", "--postgres-db-url", "mysql://x/y"],
         "smg: postgres_db_url must be a postgresql:// URL\n"),
        (["--redis-retention-days", "0"],
         "smg: redis_retention_days must be at least 1, or -1 (keep forever)\n"),
        (["--redis-pool-max-size", "0"], "smg: history pool sizes must be at least 1\n"),
        (["--redis-url", "http://r:1"], "smg: redis_url must be a redis://, rediss:// or unix:// URL\n"),
    ],
)  # fmt: skip
def test_refused(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, *flags]) == 2
    assert capsys.readouterr().err == message


def test_unknown_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, "--history-backend", "sqlite"]) == 2
    assert "invalid choice: 'sqlite'" in capsys.readouterr().err


def test_urls_are_not_in_the_config_repr() -> None:
    assert "secret" not in repr(HistoryConfig(backend="postgres", postgres_db_url=PG_URL))


@pytest.mark.parametrize(
    ("history", "kind"),
    [
        (HistoryConfig(), MemoryHistory),
        (HistoryConfig(backend="none"), NoHistory),
        (HistoryConfig(backend="postgres", postgres_db_url=PG_URL), PostgresHistory),
        (HistoryConfig(backend="redis"), RedisHistory),
    ],
)
def test_make_history_builds_the_named_backend(history: HistoryConfig, kind: type) -> None:
    config = GatewayConfig(worker_urls=(WorkerUrl.parse("grpc://w:1"),), history=history)
    store = make_history(config)  # builds only: nothing connects before start()
    assert isinstance(store, kind) and store.name == history.backend


def test_config_validates_the_backend() -> None:
    with pytest.raises(ConfigError, match="unknown history backend 'oracle'"):
        HistoryConfig(backend="oracle")  # type: ignore[arg-type]
