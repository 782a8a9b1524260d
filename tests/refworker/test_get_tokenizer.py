"""``GetTokenizer``: the model directory's tokenizer files as a zip, in 64 KiB chunks, SHA-256 last."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from refworker import tokenizer_bundle
from refworker.config import default_model_path
from tests.fakes.models import LLAMA3_MODEL
from tests.refworker.conftest import StartWorker


async def fetch(stub: Any) -> list[Any]:
    return [chunk async for chunk in stub.GetTokenizer(common.GetTokenizerRequest())]


async def test_the_bundle_streams_in_chunks_with_the_digest_last(stub: Any) -> None:
    chunks = await fetch(stub)
    data = b"".join(c.data for c in chunks)
    assert len(chunks) > 1 and all(len(c.data) <= tokenizer_bundle.CHUNK_BYTES for c in chunks)
    assert [bool(c.sha256) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert archive.read("tokenizer.json") == (default_model_path() / "tokenizer.json").read_bytes()
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"} <= set(names)
    assert await fetch(stub) == chunks  # built once, the same every time


async def test_a_worker_started_from_a_hub_id_reports_it(start_worker: StartWorker) -> None:
    _, stub = await start_worker(reported_model_path=LLAMA3_MODEL)
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert (info.model_path, info.tokenizer_path) == (LLAMA3_MODEL, LLAMA3_MODEL)


def test_the_bundle_takes_templates_and_configs_by_name_and_pattern(llama3_dir: Path) -> None:
    bundle = tokenizer_bundle.build(llama3_dir)
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
        assert sorted(archive.namelist()) == [
            "chat_template.jinja", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json",
        ]  # fmt: skip
    chunks = list(bundle.chunks())
    assert b"".join(d for d, _ in chunks) == bundle.data and chunks[-1][1] == bundle.sha256


def test_a_directory_without_tokenizer_files_has_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tokenizer_bundle.build(tmp_path)


async def test_no_tokenizer_files_is_not_found(start_worker: StartWorker, tmp_path: Path) -> None:
    worker, stub = await start_worker()
    worker.engine.model = dataclasses.replace(worker.engine.model, path=tmp_path)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fetch(stub)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
