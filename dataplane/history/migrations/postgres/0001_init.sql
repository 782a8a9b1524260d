-- The history tables, in the shape of SMG's data connector (crates/data_connector): responses,
-- conversations, conversation_items and the links that put items in conversations. Differences: ids are
-- TEXT (client-supplied item ids have no length limit), a conversation item keeps the whole item object
-- (`item`, beside SMG's type/role/status columns) so every item type round-trips, and the links carry
-- `seq`, an ordering column, because two items added in one transaction share `added_at`.
-- JSON, not JSONB: the objects come back exactly as they were stored (key order included).

CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,
    conversation_id      TEXT,
    previous_response_id TEXT,
    input                JSON NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    safety_identifier    TEXT,
    model                TEXT NOT NULL,
    raw_response         JSON NOT NULL
);
CREATE INDEX responses_safety_idx ON responses (safety_identifier);
CREATE INDEX responses_conversation_idx ON responses (conversation_id);

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    metadata   JSON NOT NULL
);

CREATE TABLE conversation_items (
    id          TEXT PRIMARY KEY,
    response_id TEXT,
    item_type   TEXT NOT NULL,
    role        TEXT,
    status      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    item        JSON NOT NULL
);

CREATE TABLE conversation_item_links (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    item_id         TEXT NOT NULL REFERENCES conversation_items (id) ON DELETE CASCADE,
    added_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (conversation_id, item_id)
);
CREATE INDEX conv_item_links_conv_idx ON conversation_item_links (conversation_id, seq);
CREATE INDEX conv_item_links_item_idx ON conversation_item_links (item_id);
