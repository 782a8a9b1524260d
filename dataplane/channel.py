"""grpclib's ``Channel`` to a worker, with an HPACK encoder that knows which metadata never repeats.

HPACK (RFC 7541) adds every literal header to the connection's dynamic table and Huffman-codes its value.
That pays off for headers that repeat (``:path``, ``content-type``, an ``authorization`` token: after the
first request each is one byte), and only costs for a value that is new on every request: W3C
``traceparent`` carries a fresh span id each time. In the pure-Python encoder (hpack, under h2 under
grpclib) such a value cost ~15 µs per request: Huffman coding of 55 characters, a table insertion that
evicts an older entry, and a dynamic table full of dead trace ids that every other header's lookup then
walks. Sent as a never-indexed literal without Huffman coding (RFC 7541 §6.2.3; the value is hex, which
Huffman barely shrinks), it costs ~3 µs and leaves the table to the headers that repeat.

grpclib hands metadata to h2 as plain tuples, so the choice cannot be made per header by the caller; the
encoder is chosen per connection instead, before the connection sends its first HEADERS frame.
"""

from __future__ import annotations

import asyncio

from grpclib.client import Channel, Handler
from grpclib.protocol import H2Protocol
from hpack import Encoder
from hpack.hpack import INDEX_NEVER, encode_integer

# Headers whose value is unique to one request (names as hpack sees them: lower-case bytes).
UNIQUE_PER_REQUEST = frozenset({b"traceparent"})
# Each one's representation up to its value's length: never indexed (RFC 7541 §6.2.3), literal name.
_SHORT_LENGTHS = [bytes((n,)) for n in range(0x7F)]  # a value's length, Huffman bit clear
_LITERAL_NAMES = {
    name: INDEX_NEVER + bytes(encode_integer(len(name), 7)) + name for name in UNIQUE_PER_REQUEST
}


class UniqueValueEncoder(Encoder):
    """``hpack.Encoder`` writing ``UNIQUE_PER_REQUEST`` headers as never-indexed, plain literals."""

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        name, value = to_add
        if name in UNIQUE_PER_REQUEST:
            # What ``add`` writes for a never-indexed header that neither table holds (these names are in
            # no static entry, and never added), without first walking both tables for it.
            if len(value) < 0x7F:  # the length fits the 7-bit prefix (a traceparent's 55 characters do)
                return _LITERAL_NAMES[name] + _SHORT_LENGTHS[len(value)] + value
            return self._encode_literal(name, value, INDEX_NEVER, huffman=False)
        return super().add(to_add, sensitive, huffman)


class _Protocol(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Only SETTINGS has been written so far: both sides' HPACK tables are still empty.
        self.connection._connection.encoder = UniqueValueEncoder()


class WorkerChannel(Channel):
    """A grpclib ``Channel`` whose connections use ``UniqueValueEncoder``."""

    def _protocol_factory(self) -> H2Protocol:
        return _Protocol(Handler(), self._config, self._h2_config)
