"""Shared fixtures: the embedded model directory and its tokenizer, and a Llama 3 one (loaded once per
session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.embedded import embedded_model_dir
from dataplane.tokenizer import ModelTokenizer
from tests.fakes.models import llama3_model_dir

# Real PostgreSQL and Redis servers (postgres_server, redis_server) for the history backends' tests.
pytest_plugins = ("tests.services",)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded_model_dir(tmp_path_factory.mktemp("smg-cache"))


@pytest.fixture(scope="session")
def qwen(model_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_dir(model_dir)


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llama3_model_dir(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="session")
def llama3(llama3_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_dir(llama3_dir)
