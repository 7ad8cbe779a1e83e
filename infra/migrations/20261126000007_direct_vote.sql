-- Direct mode in one round trip (docs/microbenchmarks.md, "Direct mode: one vote per
-- transaction").
--
-- ingest's direct mode used to record a vote as eight statements in an explicit transaction
-- (BEGIN, the tenant setting, the token lock, the election check, three writes, COMMIT): at
-- 0.2-0.5 ms per round trip that was most of the time a vote took. This function does the same
-- work, in the same order and with the same locks, server-side; ingest calls it in autocommit,
-- so one statement is the whole transaction.
--
-- SECURITY INVOKER: it runs with the caller's rights, so the ingest role's grants and every
-- row-level-security policy apply exactly as they did to the separate statements; the function
-- adds no privilege. The tenant is set the same way as shared::db::set_tenant does,
-- transaction-locally, so it ends with the statement's own transaction and no pooled
-- connection carries it into the next request. A caller naming another tenant sees none of
-- that tenant's rows (the token is 'unregistered') and cannot write rows in its name that its
-- own tenant setting would not allow.
--
-- The outcomes (the caller maps them to the same answers as before):
--   'unregistered'  no such token for this election (in this tenant);
--   'used'          the token was used; stored_key_hash is the Idempotency-Key hash of the
--                   receipt if it is recorded (ingest compares it with the request's key:
--                   the same key is a replay of the first answer, anything else is a conflict);
--   'closed'        the election is not open now (or not visible in this tenant);
--   'recorded'      the ballot was inserted, the token marked used and the receipt recorded.
-- Lock trouble is an error, as before: a concurrent vote with the same token gets SQLSTATE
-- 55P03 from NOWAIT (or from lock_timeout on the election row), which ingest answers with 503
-- and Retry-After.
CREATE FUNCTION elections.record_direct_vote(
    p_org_id      text,
    p_election_id uuid,
    p_token_hash  bytea,
    p_receipt     text,
    p_choices     text[],
    p_key_hash    bytea,
    OUT outcome         text,
    OUT stored_key_hash bytea)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    -- No object is resolved through the caller's search_path (every name below is qualified;
    -- the policies' app_org_id() was resolved when they were created).
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_used boolean;
    v_open boolean;
BEGIN
    -- Transaction-local (is_local = true), exactly like shared::db::set_tenant. Only
    -- search_path is restored when the function returns; this setting lasts until the end of
    -- the caller's transaction, i.e. of this statement in autocommit.
    PERFORM set_config('app.org_id', p_org_id, true);

    -- NOWAIT: a concurrent vote with the same token is told to retry (55P03) rather than queue
    -- behind the lock.
    SELECT t.used INTO v_used
      FROM elections.voting_tokens t
     WHERE t.election_id = p_election_id AND t.token_hash = p_token_hash
       FOR UPDATE NOWAIT;
    IF NOT FOUND THEN
        outcome := 'unregistered';
        RETURN;
    END IF;
    IF v_used THEN
        outcome := 'used';
        SELECT r.idempotency_key_hash INTO stored_key_hash
          FROM elections.receipts r
         WHERE r.receipt = p_receipt AND r.status = 'recorded';
        RETURN;
    END IF;

    -- The election's state is re-read here, so a close is honoured at once. FOR KEY SHARE: the
    -- ballot and receipt rows no longer have a foreign key to the election (migration 6), whose
    -- check took this lock; taking it here keeps the guarantee that the election row cannot
    -- disappear (or change its id) before this vote commits. It does not conflict with closing
    -- the election (an update of other columns).
    SELECT e.status = 'open'
           AND (e.opens_at IS NULL OR e.opens_at <= now())
           AND (e.closes_at IS NULL OR e.closes_at > now())
      INTO v_open
      FROM elections.elections e
     WHERE e.id = p_election_id
       FOR KEY SHARE;
    IF v_open IS NOT TRUE THEN
        outcome := 'closed';
        RETURN;
    END IF;

    INSERT INTO elections.ballots (org_id, election_id, choices)
    VALUES (p_org_id, p_election_id, p_choices);
    UPDATE elections.voting_tokens t SET used = true
     WHERE t.election_id = p_election_id AND t.token_hash = p_token_hash;
    INSERT INTO elections.receipts
           (receipt, org_id, election_id, status, reason, idempotency_key_hash)
    VALUES (p_receipt, p_org_id, p_election_id, 'recorded', NULL, p_key_hash)
    ON CONFLICT (receipt) DO UPDATE
       SET status = 'recorded', reason = NULL, idempotency_key_hash = excluded.idempotency_key_hash;
    outcome := 'recorded';
END
$$;

-- Only ingest records votes this way (PostgreSQL grants EXECUTE to PUBLIC by default).
REVOKE EXECUTE ON FUNCTION elections.record_direct_vote(text, uuid, bytea, text, text[], bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION elections.record_direct_vote(text, uuid, bytea, text, text[], bytea) TO ekklesia_ingest;
