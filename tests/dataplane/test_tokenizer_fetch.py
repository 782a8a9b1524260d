"""Tokenizer bundles from workers: verified, checked entry by entry, unpacked once into the cache."""

from __future__ import annotations

import hashlib
import io
import logging
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.gateway import Gateway
from dataplane.tokenizer_fetch import BundleError, TokenizerBundle, install, safe_members
from dataplane.types import WorkerInfo
from tests.dataplane.gateways import until
from tests.fakes.worker import FakeClient

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def zipped(entries: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def bundle_of(data: bytes) -> TokenizerBundle:
    return TokenizerBundle(data, hashlib.sha256(data).hexdigest())


def model_files(model_dir: Path) -> dict[str, bytes]:
    return {name: (model_dir / name).read_bytes() for name in TOKENIZER_FILES}


def test_a_verified_bundle_is_unpacked_once(model_dir: Path, tmp_path: Path) -> None:
    bundle = bundle_of(zipped(model_files(model_dir) | {"templates/chat.jinja": b"{{ x }}"}))
    target = install(bundle, tmp_path)
    assert target == tmp_path / "tokenizers" / bundle.sha256
    assert (target / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    assert (target / "templates" / "chat.jinja").read_text() == "{{ x }}"
    (target / "tokenizer_config.json").write_text("{}")  # a second install finds it and keeps it
    assert install(bundle, tmp_path) == target and (target / "tokenizer_config.json").read_text() == "{}"
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [bundle.sha256]  # no partial left


@pytest.mark.parametrize(
    ("sha256", "message"),
    [("", "without its SHA-256"), ("0" * 64, "mismatch"), ("not hex", "mismatch")],
)
def test_the_digest_must_match(model_dir: Path, tmp_path: Path, sha256: str, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        install(TokenizerBundle(zipped(model_files(model_dir)), sha256), tmp_path)
    assert not (tmp_path / "tokenizers").exists()


def test_an_uppercase_digest_is_the_same_digest(model_dir: Path, tmp_path: Path) -> None:
    data = zipped(model_files(model_dir))
    install(TokenizerBundle(data, hashlib.sha256(data).hexdigest().upper()), tmp_path)


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../evil.json", "a/../../evil.json", "..", "a\\..\\b", "C:/x.json", "c:evil", "a/./../b"],
)
def test_unsafe_paths_refuse_the_whole_bundle(model_dir: Path, tmp_path: Path, name: str) -> None:
    bundle = bundle_of(zipped(model_files(model_dir) | {name: b"x"}))
    with pytest.raises(BundleError, match="unsafe path"):
        install(bundle, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.json"))
    assert not (tmp_path / "evil.json").exists()


@pytest.mark.parametrize(
    ("mode", "kind"), [(stat.S_IFLNK | 0o777, "symlink"), (stat.S_IFIFO | 0o644, "regular")]
)
def test_links_and_special_files_are_refused(model_dir: Path, tmp_path: Path, mode: int, kind: str) -> None:
    data = zipped(model_files(model_dir) | {"vocab.json": b"/etc/passwd"}, modes={"vocab.json": mode})
    with pytest.raises(BundleError, match=kind):
        install(bundle_of(data), tmp_path)


def test_bounds_and_shape(model_dir: Path, tmp_path: Path) -> None:
    too_many = {f"f{i}.txt": b"" for i in range(50)} | {"tokenizer.json": b"{}"}
    with pytest.raises(BundleError, match="51 entries"):
        install(bundle_of(zipped(too_many)), tmp_path)
    with pytest.raises(BundleError, match=r"no tokenizer\.json"):
        install(bundle_of(zipped({"config.json": b"{}"})), tmp_path)
    with pytest.raises(BundleError, match="empty"):
        install(bundle_of(b""), tmp_path)
    with pytest.raises(BundleError, match="not a zip"):
        install(bundle_of(b"not a zip"), tmp_path)


def test_declared_sizes_bound_what_is_unpacked(model_dir: Path) -> None:
    data = zipped(model_files(model_dir))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            info.file_size = 600 * 1024 * 1024  # a header that claims more than the bound
        with pytest.raises(BundleError, match="unpacks to more"):
            safe_members(archive)


@dataclass
class ShippingClient(FakeClient):
    """A worker that ships its tokenizer; ``bundles`` are served one per call."""

    bundles: list[TokenizerBundle] = field(default_factory=list)
    fetched: int = 0

    async def get_tokenizer(self, timeout: float) -> TokenizerBundle:
        self.fetched += 1
        return self.bundles.pop(0)


async def test_the_gateway_fetches_a_tokenizer_it_does_not_have(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMG_CACHE_DIR", str(tmp_path))
    good = bundle_of(zipped(model_files(model_dir)))
    bad = TokenizerBundle(good.data, "0" * 64)
    info = WorkerInfo("org/remote-model", "org/remote-model", "org/remote-model", 4096, (151645,), "default")
    client = ShippingClient("grpc://w:1", lambda _: [], info, bundles=[bad, good])
    config = GatewayConfig(worker_urls=(WorkerUrl.parse("grpc://w:1"),), disable_health_check=True)
    gateway = Gateway(config, lambda _: client)
    await gateway.start()
    try:
        await until(lambda: gateway.ready, timeout=10)  # the bad bundle refused, the retry succeeds
        tok = gateway.tokenizer("org/remote-model")
        assert client.fetched == 2
        assert tok.source == str(tmp_path / "tokenizers" / good.sha256)
        assert tok.encode("hello") == [14990]
        assert tok.eos_token_ids == {151645, 151643}  # from the shipped generation_config.json
    finally:
        await gateway.stop()


async def test_a_worker_that_cannot_ship_its_tokenizer_stays_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = WorkerInfo("org/remote-model", "org/remote-model", "", 4096, (1,), "default")
    client = FakeClient("grpc://w:1", lambda _: [], info)  # no get_tokenizer
    config = GatewayConfig(worker_urls=(WorkerUrl.parse("grpc://w:1"),), disable_health_check=True)
    gateway = Gateway(config, lambda _: client)
    caplog.set_level(logging.INFO, logger="dataplane.gateway")
    await gateway.start()
    try:
        await until(lambda: "cannot send its own" in caplog.text, timeout=10)
        assert not gateway.ready and "--model-path or --tokenizer-path" in caplog.text
    finally:
        await gateway.stop()
