"""The worker side of ``GetTokenizer``: the model directory's tokenizer files as one zip, in chunks.

The files and the chunking are those of SMG's own servicers (``smg_grpc_servicer/tokenizer_bundle.py``):
tokenizer, config and template files by name and by pattern, 64 KiB per message, and the SHA-256 (hex)
of the whole zip on the last message only.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 64 * 1024
FILES = (
    "tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
    "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "tiktoken.model",
    "chat_template.json", "preprocessor_config.json",
)  # fmt: skip
PATTERNS = ("*.tiktoken", "*.jinja", "*.model")


@dataclass(frozen=True, slots=True)
class Bundle:
    data: bytes
    sha256: str

    def chunks(self) -> Iterator[tuple[bytes, str]]:
        """``(data, sha256)`` per message: the digest rides on the last one only."""
        count = max(1, -(-len(self.data) // CHUNK_BYTES))
        for i in range(count):
            last = i == count - 1
            yield self.data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES], self.sha256 if last else ""


def build(directory: Path) -> Bundle:
    """Zip ``directory``'s tokenizer files (flat, deflated); raises ``FileNotFoundError`` if none."""
    names = [n for n in FILES if (directory / n).is_file()]
    for pattern in PATTERNS:
        names += sorted(p.name for p in directory.glob(pattern) if p.is_file() and p.name not in names)
    if not names:
        raise FileNotFoundError(f"no tokenizer files in {directory}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(directory / name, name)
    data = buffer.getvalue()
    return Bundle(data, hashlib.sha256(data).hexdigest())
