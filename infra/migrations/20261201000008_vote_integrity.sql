-- Vote integrity under faults and secrecy against database readers (docs/design.md).
--
-- 1. Ballots are stored encrypted (elections.ballot_box) until their election is sealed; the seal
--    decrypts them in the worker and writes them to elections.ballots in random order. Before the
--    seal a database reader sees no choice next to the xmin and order that tie a ballot to its
--    token or batch; after it, the plaintext rows share the seal's xmin and carry no order.
-- 2. Ingest records which receipts it answered 202 for (elections.accepted_votes, flushed in bulk
--    off the vote path) and how far it has flushed (ops.ingest_ledger). An election is sealed,
--    and its results final, only when every vote accepted before its close has a decided receipt.
-- 3. Least privilege: ingest writes votes only through elections.record_direct_vote (SECURITY
--    DEFINER), the worker changes an election only through the seal and close functions.

CREATE TABLE elections.ballot_box (
    org_id      text  NOT NULL,
    election_id uuid  NOT NULL,
    -- AES-256-GCM of the choices under the vote keys, bound to org and election (shared::vote_keys).
    sealed      bytea NOT NULL CHECK (length(sealed) BETWEEN 30 AND 65536)
);
CREATE INDEX ballot_box_election_idx ON elections.ballot_box (election_id);
ALTER TABLE elections.ballot_box ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON elections.ballot_box USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());

-- Receipts ingest answered 202 for in queue mode. A row without a decided receipt is a vote
-- still on its way (in the queue, redelivering, or dead-lettered): it keeps its election from
-- being sealed. Pruned when the election is sealed.
CREATE TABLE elections.accepted_votes (
    org_id      text        NOT NULL,
    election_id uuid        NOT NULL,
    receipt     text        NOT NULL PRIMARY KEY,
    accepted_at timestamptz NOT NULL
);
CREATE INDEX accepted_votes_election_idx ON elections.accepted_votes (election_id, accepted_at);
ALTER TABLE elections.accepted_votes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON elections.accepted_votes USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());

-- Each running ingest instance: its heartbeat and the instant up to which every vote it answered
-- 202 is in elections.accepted_votes (its own clock). Removed when the instance stops cleanly.
CREATE TABLE ops.ingest_ledger (
    instance_id     text        NOT NULL PRIMARY KEY,
    heartbeat_at    timestamptz NOT NULL,
    flushed_through timestamptz NOT NULL
);

-- The Idempotency-Key is part of the receipt now (shared::receipt::submission_digest): an
-- unsalted hash of it beside the receipt only linked a client's receipts across elections.
ALTER TABLE elections.receipts DROP COLUMN idempotency_key_hash;

-- Whether the queue for an election has drained up to its close: no accepted vote undecided, and
-- every live ingest instance has flushed past the close plus the grace that covers votes accepted
-- just before it (publish budget, definition refresh). Instances silent for a minute are not
-- waited for: one that died without flushing loses only its last fraction of a second of
-- entries, and the worker records such a vote even after the seal (and seals again).
CREATE FUNCTION elections.drained(p_election uuid, p_closed_at timestamptz, p_grace interval)
    RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT NOT EXISTS (
                   SELECT 1 FROM elections.accepted_votes a
                    WHERE a.election_id = p_election
                      AND NOT EXISTS (SELECT 1 FROM elections.receipts r WHERE r.receipt = a.receipt))
           AND NOT EXISTS (
                   SELECT 1 FROM ops.ingest_ledger i
                    WHERE i.heartbeat_at > now() - interval '60 seconds'
                      AND i.flushed_through < p_closed_at + p_grace)
    $$;
REVOKE EXECUTE ON FUNCTION elections.drained(uuid, timestamptz, interval) FROM PUBLIC;

-- Elections whose closes_at has passed close by themselves (closed_at = closes_at), so they are
-- sealed and their results become final without anyone pressing "close".
CREATE FUNCTION elections.close_due()
    RETURNS TABLE (org_id text, id uuid)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE elections.elections e
           SET status = 'closed', closed_at = COALESCE(e.closed_at, e.closes_at), updated_at = now()
         WHERE e.status = 'open' AND e.closes_at IS NOT NULL AND e.closes_at <= now()
        RETURNING e.org_id, e.id
    $$;
REVOKE EXECUTE ON FUNCTION elections.close_due() FROM PUBLIC;

-- Step 1 of a seal, in the worker's transaction: locks the election (so no ballot can be added
-- until the transaction ends) and says whether it may be sealed now. The worker then reads and
-- decrypts the ballot box and calls finish_seal in the same transaction.
CREATE FUNCTION elections.begin_seal(p_org_id text, p_election uuid, p_grace interval)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e elections.elections%ROWTYPE;
BEGIN
    SELECT * INTO e FROM elections.elections
     WHERE org_id = p_org_id AND id = p_election FOR UPDATE;
    IF NOT FOUND OR e.status <> 'closed' THEN
        RETURN 'not_closed';
    END IF;
    IF e.sealed_at IS NOT NULL THEN
        RETURN 'sealed';
    END IF;
    IF now() < e.closed_at + p_grace THEN
        RETURN 'too_early';
    END IF;
    IF NOT elections.drained(p_election, e.closed_at, p_grace) THEN
        RETURN 'undecided';
    END IF;
    RETURN 'ready';
END
$$;
REVOKE EXECUTE ON FUNCTION elections.begin_seal(text, uuid, interval) FROM PUBLIC;

-- Step 2: p_ballots are the decrypted ballot box (one text[] literal per ballot, as the worker's
-- batch writer binds them), exactly as many as the box holds. Every ballot of the election
-- (earlier sealed ones too, after a late vote reopened the seal) is rewritten in random order in
-- this one transaction, so all of them share its xmin and none keeps its arrival order.
CREATE FUNCTION elections.finish_seal(p_org_id text, p_election uuid, p_ballots text[])
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_boxed bigint;
    v_total bigint;
BEGIN
    PERFORM 1 FROM elections.elections
      WHERE org_id = p_org_id AND id = p_election AND status = 'closed' AND sealed_at IS NULL
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'election is not waiting to be sealed' USING ERRCODE = '55000';
    END IF;
    WITH gone AS (DELETE FROM elections.ballot_box
                   WHERE org_id = p_org_id AND election_id = p_election RETURNING 1)
    SELECT count(*) INTO v_boxed FROM gone;
    IF v_boxed <> coalesce(cardinality(p_ballots), 0) THEN
        RAISE EXCEPTION 'the ballot box holds % ballots, % were given', v_boxed, coalesce(cardinality(p_ballots), 0)
            USING ERRCODE = '22023';
    END IF;
    WITH old AS (DELETE FROM elections.ballots
                  WHERE org_id = p_org_id AND election_id = p_election RETURNING choices),
         every AS (SELECT choices FROM old
                   UNION ALL SELECT b::text[] FROM unnest(p_ballots) AS b)
    INSERT INTO elections.ballots (org_id, election_id, choices)
    SELECT p_org_id, p_election, choices FROM every ORDER BY random();
    GET DIAGNOSTICS v_total = ROW_COUNT;
    DELETE FROM elections.accepted_votes WHERE org_id = p_org_id AND election_id = p_election;
    UPDATE elections.elections SET sealed_at = now() WHERE org_id = p_org_id AND id = p_election;
    RETURN v_total;
END
$$;
REVOKE EXECUTE ON FUNCTION elections.finish_seal(text, uuid, text[]) FROM PUBLIC;

-- A vote accepted before the close that the worker records after the seal (a seal the gate let
-- through too early: an ingest instance died with unflushed entries) reopens the seal: the
-- election is sealed again, with that ballot, and its results are not final until then.
CREATE FUNCTION elections.reopen_seal(p_org_id text, p_election uuid)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE elections.elections SET sealed_at = NULL
         WHERE org_id = p_org_id AND id = p_election AND sealed_at IS NOT NULL
    $$;
REVOKE EXECUTE ON FUNCTION elections.reopen_seal(text, uuid) FROM PUBLIC;

-- The batch writer's read of its elections, FOR KEY SHARE: each stays as it is (not deleted,
-- not sealed, since the seal takes it FOR UPDATE) until the batch commits. A row lock needs
-- UPDATE privilege, which the worker no longer has on elections; this function takes the lock
-- for it (in the caller's transaction) and nothing more.
CREATE FUNCTION elections.lock_for_votes(p_org_id text, p_ids uuid[])
    RETURNS TABLE (org_id text, id uuid, kind text, options jsonb, max_choices integer,
                   status text, opens_at timestamptz, closes_at timestamptz,
                   closed_at timestamptz, sealed_at timestamptz)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT e.org_id, e.id, e.kind, e.options, e.max_choices, e.status, e.opens_at,
               e.closes_at, e.closed_at, e.sealed_at
          FROM elections.elections e
         WHERE e.org_id = p_org_id AND e.id = ANY(p_ids)
         ORDER BY e.id
           FOR KEY SHARE
    $$;
REVOKE EXECUTE ON FUNCTION elections.lock_for_votes(text, uuid[]) FROM PUBLIC;

-- Votes ingest accepted that have no outcome yet, per tenant (an operator's and an alert's view).
CREATE FUNCTION elections.undecided_votes()
    RETURNS TABLE (org_id text, undecided bigint, oldest timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT a.org_id, count(*), min(a.accepted_at) FROM elections.accepted_votes a
         WHERE NOT EXISTS (SELECT 1 FROM elections.receipts r WHERE r.receipt = a.receipt)
         GROUP BY a.org_id
    $$;
REVOKE EXECUTE ON FUNCTION elections.undecided_votes() FROM PUBLIC;

-- Direct mode, now SECURITY DEFINER so ingest needs no write privilege on any vote table. The
-- definer (the owner) is not subject to row-level security, so every statement names the tenant
-- explicitly; ingest passes the tenant of the verified token. The ballot arrives encrypted.
-- Outcomes: 'recorded'; 'replayed' (this very submission was recorded before and may be
-- answered again); 'used' (the token voted with another submission); 'unregistered';
-- 'closed'. A concurrent vote with the same token gets SQLSTATE 55P03 (NOWAIT) → 503.
DROP FUNCTION elections.record_direct_vote(text, uuid, bytea, text, text[], bytea);
CREATE FUNCTION elections.record_direct_vote(
    p_org_id      text,
    p_election_id uuid,
    p_token_hash  bytea,
    p_receipt     text,
    p_sealed      bytea,
    p_replayable  boolean)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_used boolean;
    v_open boolean;
BEGIN
    SELECT t.used INTO v_used
      FROM elections.voting_tokens t
     WHERE t.org_id = p_org_id AND t.election_id = p_election_id AND t.token_hash = p_token_hash
       FOR UPDATE NOWAIT;
    IF NOT FOUND THEN
        RETURN 'unregistered';
    END IF;
    IF v_used THEN
        IF p_replayable AND EXISTS (SELECT 1 FROM elections.receipts r
                                     WHERE r.receipt = p_receipt AND r.status = 'recorded') THEN
            RETURN 'replayed';
        END IF;
        RETURN 'used';
    END IF;
    -- Re-read here, so a close is honoured at once; FOR KEY SHARE keeps the election row (and a
    -- seal, which takes it FOR UPDATE) from changing under this vote until it commits.
    SELECT e.status = 'open'
           AND (e.opens_at IS NULL OR e.opens_at <= now())
           AND (e.closes_at IS NULL OR e.closes_at > now())
      INTO v_open
      FROM elections.elections e
     WHERE e.org_id = p_org_id AND e.id = p_election_id
       FOR KEY SHARE;
    IF v_open IS NOT TRUE THEN
        RETURN 'closed';
    END IF;
    INSERT INTO elections.ballot_box (org_id, election_id, sealed)
    VALUES (p_org_id, p_election_id, p_sealed);
    UPDATE elections.voting_tokens t SET used = true
     WHERE t.org_id = p_org_id AND t.election_id = p_election_id AND t.token_hash = p_token_hash;
    INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason)
    VALUES (p_receipt, p_org_id, p_election_id, 'recorded', NULL)
    ON CONFLICT (receipt) DO UPDATE SET status = 'recorded', reason = NULL;
    RETURN 'recorded';
END
$$;
REVOKE EXECUTE ON FUNCTION elections.record_direct_vote(text, uuid, bytea, text, bytea, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION elections.record_direct_vote(text, uuid, bytea, text, bytea, boolean) TO ekklesia_ingest;

-- ingest: no direct write to ballots, the ballot box, receipts or token state.
REVOKE INSERT ON elections.ballots FROM ekklesia_ingest;
REVOKE UPDATE ON elections.voting_tokens FROM ekklesia_ingest;
REVOKE INSERT, UPDATE ON elections.receipts FROM ekklesia_ingest;
GRANT SELECT ON elections.ballot_box TO ekklesia_ingest;
GRANT SELECT, INSERT ON elections.accepted_votes TO ekklesia_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON ops.ingest_ledger TO ekklesia_ingest;
GRANT SELECT ON ops.ingest_ledger TO ekklesia_worker, ekklesia_events;

-- worker: writes encrypted ballots, claims tokens, records receipts; seals and closes only
-- through the functions above.
REVOKE UPDATE ON elections.elections FROM ekklesia_worker;
REVOKE UPDATE ON elections.voting_tokens FROM ekklesia_worker;
GRANT UPDATE (used) ON elections.voting_tokens TO ekklesia_worker;
REVOKE INSERT, DELETE ON elections.ballots FROM ekklesia_worker;
REVOKE UPDATE ON elections.receipts FROM ekklesia_worker;
GRANT UPDATE (status, reason) ON elections.receipts TO ekklesia_worker;
GRANT SELECT, INSERT ON elections.ballot_box TO ekklesia_worker;
GRANT SELECT ON elections.accepted_votes TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.begin_seal(text, uuid, interval) TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.finish_seal(text, uuid, text[]) TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.reopen_seal(text, uuid) TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.close_due() TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.lock_for_votes(text, uuid[]) TO ekklesia_worker;
GRANT EXECUTE ON FUNCTION elections.undecided_votes() TO ekklesia_worker, ekklesia_ingest;
