-- The elections side: what ingest and the worker read and write.
--
-- Ballot secrecy by construction (invariant 4): a ballot row holds its tenant, its election and
-- its choices, nothing else -- no id that grows with arrival, no time, no token, no receipt.
-- What PostgreSQL itself keeps (xmin, physical order) is erased when an election is sealed.

CREATE TABLE elections.elections (
    org_id      text        NOT NULL,
    id          uuid        NOT NULL PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('single', 'multiple', 'ranked')),
    options     jsonb       NOT NULL,
    max_choices integer     NOT NULL CHECK (max_choices >= 1),
    status      text        NOT NULL CHECK (status IN ('draft', 'open', 'closed')),
    opens_at    timestamptz,
    closes_at   timestamptz,
    -- When the close was received: a vote accepted by ingest after this instant is rejected.
    closed_at   timestamptz,
    -- Set once the ballots were rewritten in random order (see seal in the worker).
    sealed_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per voting token, keyed by sha256(token id). It says nothing about who holds it.
CREATE TABLE elections.voting_tokens (
    org_id      text    NOT NULL,
    election_id uuid    NOT NULL REFERENCES elections.elections (id),
    token_hash  bytea   NOT NULL CHECK (length(token_hash) = 32),
    used        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (election_id, token_hash)
);

CREATE TABLE elections.ballots (
    org_id      text   NOT NULL,
    election_id uuid   NOT NULL REFERENCES elections.elections (id),
    choices     text[] NOT NULL CHECK (cardinality(choices) >= 1)
);
CREATE INDEX ballots_election_idx ON elections.ballots (election_id);

-- The outcome a voter can look up with their receipt. Queued votes have no row yet.
CREATE TABLE elections.receipts (
    receipt              text  NOT NULL PRIMARY KEY,
    org_id               text  NOT NULL,
    election_id          uuid  NOT NULL REFERENCES elections.elections (id),
    status               text  NOT NULL CHECK (status IN ('recorded', 'rejected')),
    reason               text  CHECK ((status = 'rejected') = (reason IS NOT NULL)),
    -- sha256 of the client's Idempotency-Key in direct mode, so a replay gets the first answer.
    idempotency_key_hash bytea
);

ALTER TABLE elections.elections     ENABLE ROW LEVEL SECURITY;
ALTER TABLE elections.voting_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE elections.ballots       ENABLE ROW LEVEL SECURITY;
ALTER TABLE elections.receipts      ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON elections.elections     USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());
CREATE POLICY tenant ON elections.voting_tokens USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());
CREATE POLICY tenant ON elections.ballots       USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());
CREATE POLICY tenant ON elections.receipts      USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());

-- A receipt is looked up before its tenant is known (GET /v1/receipts/{receipt} carries no
-- token). The receipt is an unguessable MAC, so this narrow function hands out exactly one row's
-- status and nothing that could be enumerated.
CREATE FUNCTION elections.receipt_status(p_receipt text)
    RETURNS TABLE (status text, reason text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT r.status, r.reason FROM elections.receipts r WHERE r.receipt = p_receipt $$;
REVOKE EXECUTE ON FUNCTION elections.receipt_status(text) FROM PUBLIC;

-- The worker seals closed elections of every tenant; it learns which ones through this function
-- and then works inside each tenant's own setting.
CREATE FUNCTION elections.awaiting_seal()
    RETURNS TABLE (org_id text, id uuid, closed_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT e.org_id, e.id, e.closed_at FROM elections.elections e
          WHERE e.status = 'closed' AND e.sealed_at IS NULL $$;
REVOKE EXECUTE ON FUNCTION elections.awaiting_seal() FROM PUBLIC;

GRANT USAGE ON SCHEMA elections TO ekklesia_ingest, ekklesia_worker;

-- ingest: election definitions and token hashes arrive over its internal S2S API; direct mode
-- writes one ballot per transaction; results are tallied from the sealed rows.
GRANT SELECT, INSERT, UPDATE ON elections.elections TO ekklesia_ingest;
GRANT SELECT, INSERT, UPDATE ON elections.voting_tokens TO ekklesia_ingest;
GRANT SELECT, INSERT ON elections.ballots TO ekklesia_ingest;
GRANT SELECT, INSERT, UPDATE ON elections.receipts TO ekklesia_ingest;
GRANT EXECUTE ON FUNCTION elections.receipt_status(text) TO ekklesia_ingest;

-- worker: claims tokens, inserts ballots, records receipts, seals.
GRANT SELECT, UPDATE ON elections.elections TO ekklesia_worker;
GRANT SELECT, UPDATE ON elections.voting_tokens TO ekklesia_worker;
GRANT SELECT, INSERT, DELETE ON elections.ballots TO ekklesia_worker;
GRANT SELECT, INSERT, UPDATE ON elections.receipts TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.awaiting_seal() TO ekklesia_worker;
