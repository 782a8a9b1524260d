"""The dependency rules of ARCHITECTURE.md, checked on the import graph; and every module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dataplane", "adapters", "parsers", "refworker", "proto")
GRPC_LIBS = {"grpc", "grpclib", "grpc_health", "smg_grpc_proto", "betterproto2", "proto"}
# package -> our packages it must not import
FORBIDDEN = {
    "parsers": {"dataplane", "adapters", "refworker", "proto"},
    "dataplane": {"adapters", "refworker"},
    "refworker": {"dataplane", "adapters", "parsers"},
    "proto": {"dataplane", "adapters", "parsers", "refworker"},
}
ALLOWED_GRPC = {
    "dataplane/channel.py",
    "dataplane/client.py",
    "dataplane/vllm_client.py",
    "dataplane/trtllm_client.py",
}
# Database clients: each in the one history backend built on it.
DB_CLIENTS = {"asyncpg": "dataplane/history/postgres.py", "redis": "dataplane/history/redis.py"}


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "_gen" not in p.parts)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_dependency_rules(path: Path) -> None:
    rel = path.relative_to(ROOT)
    package = rel.parts[0]
    used = imports(path)
    assert not used & FORBIDDEN.get(package, set()), f"{rel} imports {used & FORBIDDEN[package]}"
    if package != "adapters":
        assert "adapters" not in used
    if package in ("dataplane", "parsers", "proto"):
        assert "aiohttp" not in used, f"{rel}: only adapters/ and refworker/ use aiohttp"
    if package == "parsers":
        stdlib = sys.stdlib_module_names | {"parsers"}
        assert used <= stdlib, f"{rel}: parsers is stdlib only, found {used - stdlib}"
    grpc_ok = (
        package in ("refworker", "proto") or str(rel) in ALLOWED_GRPC or rel.parts[:2] == ("adapters", "grpc")
    )
    if not grpc_ok:
        assert not used & GRPC_LIBS, f"{rel} imports {used & GRPC_LIBS}: only the gRPC worker clients may"
    for client, owner in DB_CLIENTS.items():
        assert client not in used or str(rel) == owner, f"{rel} imports {client}: only {owner} may"


def full_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, dotted names in full."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", [p for p in modules() if p.relative_to(ROOT).parts[0] == "dataplane"], ids=lambda p: p.name
)
def test_the_data_plane_uses_the_opentelemetry_api_only(path: Path) -> None:
    """The SDK and its exporters are the entrypoint's to configure (adapters/telemetry.py)."""
    sdk = {n for n in full_imports(path) if n.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))}
    assert not sdk, f"{path.relative_to(ROOT)} imports {sdk}"


def _import_alone(name: str) -> str | None:
    cmd = [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning", "-c", f"import {name}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    return None if result.returncode == 0 else f"{name}: {result.stderr.strip().splitlines()[-1:]}"


def test_every_module_imports_on_its_own() -> None:
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in modules()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(_import_alone, names) if f]
    assert not failures


def test_generated_stubs_match_the_pinned_proto_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proto.generate", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
