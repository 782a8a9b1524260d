"""What tokenizing means, for every API in front of it (HTTP here, gRPC in ``adapters.grpc``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.tokenize.request import ChatInput
from dataplane.tokenizer import ModelTokenizer


@dataclass(frozen=True, slots=True)
class Tokenized:
    ids: list[int]
    text: str  # what was tokenized: the prompt, or the rendered conversation


async def render(tok: ModelTokenizer, chat: ChatInput) -> str:
    """The conversation as the chat completions pipeline renders it for this model."""
    return await tok.render_chat_async(
        chat.messages,
        tools=chat.tools,
        add_generation_prompt=chat.add_generation_prompt,
        continue_final_message=chat.continue_final_message,
        template_kwargs=chat.template_kwargs,
    )


async def tokenize(
    tok: ModelTokenizer, text: str | None, chat: ChatInput | None, *, add_special_tokens: bool
) -> Tokenized:
    """Tokenize ``text``, or ``chat`` rendered with the chat template (whose special tokens are already
    in the text, so ``add_special_tokens`` stays false unless the client insists)."""
    if chat is not None:
        text = await render(tok, chat)
    assert text is not None
    return Tokenized(await tok.encode_async(text, add_special_tokens=add_special_tokens), text)


def token_strs(tok: ModelTokenizer, ids: Sequence[int]) -> list[str]:
    """The vocabulary entry of every id (byte-level pieces as the vocabulary spells them)."""
    piece = tok.tokenizer.id_to_token
    return [piece(i) or "" for i in ids]
