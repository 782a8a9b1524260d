"""Shared fixtures: the embedded model directory and its tokenizer (loaded once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.embedded import embedded_model_dir
from dataplane.tokenizer import ModelTokenizer


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded_model_dir(tmp_path_factory.mktemp("smg-cache"))


@pytest.fixture(scope="session")
def qwen(model_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_dir(model_dir)
