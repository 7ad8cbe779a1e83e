-- S2S nonces spent on the elections side, shared by every ingest instance, so a signed request
-- replayed to another instance, or to one that restarted, is refused as a replay to the same
-- instance is. Each instance still keeps its own in-memory cache as a cheap first check.
--
-- A request passes the timestamp check while its signed timestamp is within the window
-- (300 s) of the receiver's clock, so a row is needed until 2 × window + 1 s after it was
-- first seen; ingest deletes rows older than that whose timestamp is also more than a window
-- old (shared::s2s::NonceStore::prune, once a minute).

CREATE TABLE ops.s2s_nonces (
    key_id    text        NOT NULL,
    nonce     text        NOT NULL CHECK (length(nonce) BETWEEN 16 AND 64),
    -- The request's X-Timestamp (the caller's clock).
    signed_at timestamptz NOT NULL,
    -- When the first instance accepted it (the database's clock).
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX s2s_nonces_seen_at_idx ON ops.s2s_nonces (seen_at);

GRANT SELECT, INSERT, DELETE ON ops.s2s_nonces TO ekklesia_ingest;
