-- A tamper-evident audit log of the S2S events on the elections side and of the queue flag
-- (seed ADR-002), and per-tenant usage counters for the monthly usage report.
--
-- 1. ops.audit_log: one chain of entries per tenant (its S2S events: election pushed, tokens
--    registered, results read) and one for the platform organisation (queue-flag changes).
--    Each entry carries an HMAC-SHA256 over its content and the previous entry's MAC, computed
--    by the writing service (shared::audit) with AUDIT_KEY, a secret the database never sees:
--    whoever can write the table but lacks the key (the database owner, a backup restorer)
--    cannot edit, delete, insert or reorder an entry without `audit verify` naming it. Entries
--    say what happened, to which election, by which S2S key (or path) and when, with counts;
--    never a member id, token, token hash, receipt or choice. A flag change's entry names the
--    ops.queue_mode_audit row it audits and carries a MAC of that row (who, database login,
--    when, old, new), so that row is tamper-evident without a member id in this table.
-- 2. Append only: the service roles may INSERT (their own tenant's chain, row-level security)
--    and ask for the last entry of a chain (ops.audit_tail, which also serialises the writers
--    of one chain), never UPDATE, DELETE or read the log.
-- 3. Every queue-flag change (ops.set_queue_mode, ops.change_queue_mode) gets its entry in the
--    same transaction, from the code that makes it (events-svc, the queue-mode CLI). Not yet
--    enforced by the database: a constraint trigger on ops.queue_mode_audit would refuse the
--    changes of the release before this one during a rollout, so it is a contract step for a
--    later release (docs/migrations.md); until then a change made without its entry (by the
--    release before, or by hand) leaves an ops.queue_mode_audit row no audit entry names.
-- 4. ops.usage_minutes and ops.usage_vote_seconds: counts only (logins, requests, votes
--    accepted), per tenant and minute (votes also per second, for the peak), added in bulk by
--    each service instance about once a minute through ops.add_usage.

CREATE TABLE ops.audit_log (
    -- The tenant whose S2S events these are, or the platform organisation (queue flag).
    chain       text        NOT NULL,
    -- 1, 2, 3, ... within the chain, covered by the MAC.
    seq         bigint      NOT NULL CHECK (seq >= 1),
    at          timestamptz NOT NULL,
    event       text        NOT NULL CHECK (event IN
                    ('election_pushed', 'tokens_registered', 'results_read', 'queue_mode_changed')),
    election_id uuid,
    -- The change a 'queue_mode_changed' entry audits, and the MAC of that row's content.
    queue_mode_change bigint REFERENCES ops.queue_mode_audit (id),
    change_mac  bytea       CHECK (length(change_mac) = 32),
    -- The S2S key id of the caller, or the path a flag change took.
    actor       text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    -- Counts and states as written (json keeps the text byte for byte, which the MAC covers).
    summary     json        NOT NULL,
    prev_mac    bytea       NOT NULL CHECK (length(prev_mac) = 32),
    mac         bytea       NOT NULL CHECK (length(mac) = 32),
    PRIMARY KEY (chain, seq),
    CHECK ((event = 'queue_mode_changed') = (queue_mode_change IS NOT NULL)),
    CHECK ((queue_mode_change IS NULL) = (change_mac IS NULL))
);
CREATE INDEX audit_log_queue_mode_change_idx ON ops.audit_log (queue_mode_change)
    WHERE queue_mode_change IS NOT NULL;

-- A writer only ever appends to the chain of its transaction's tenant (app.org_id).
ALTER TABLE ops.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY append_own_chain ON ops.audit_log FOR INSERT
    WITH CHECK (chain = public.app_org_id());

-- The last entry of the transaction's chain (none: seq 0, no MAC) and the time the next entry
-- is written at. Takes a transaction-level advisory lock on the chain first, so the writers of
-- one chain take turns until each commits and two of them never both append after the same
-- entry (the primary key would refuse the second anyway). Call it last in the transaction.
CREATE FUNCTION ops.audit_tail(p_chain text)
    RETURNS TABLE (seq bigint, mac bytea, at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_chain IS DISTINCT FROM public.app_org_id() THEN
        RAISE EXCEPTION 'an audit chain is appended to in its own tenant''s transaction'
            USING ERRCODE = '42501';
    END IF;
    -- 0x61756474 ('audt') keeps these locks apart from any other advisory lock.
    PERFORM pg_advisory_xact_lock(1635083380, hashtext(p_chain));
    RETURN QUERY
        SELECT coalesce(max(l.seq), 0)::bigint,
               (SELECT l2.mac FROM ops.audit_log l2 WHERE l2.chain = p_chain ORDER BY l2.seq DESC LIMIT 1),
               clock_timestamp()
          FROM ops.audit_log l WHERE l.chain = p_chain;
END
$$;
REVOKE EXECUTE ON FUNCTION ops.audit_tail(text) FROM PUBLIC;

-- Which queue-flag change this transaction made (ops.set_queue_mode, directly or through
-- ops.change_queue_mode), so its writer can audit it.
ALTER TABLE ops.queue_mode_audit ADD COLUMN txid xid8;
ALTER TABLE ops.queue_mode_audit ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

GRANT INSERT ON ops.audit_log TO ekklesia_ingest, ekklesia_events;
GRANT EXECUTE ON FUNCTION ops.audit_tail(text) TO ekklesia_ingest, ekklesia_events;

-- Usage counters: no voter identity, only how many, per tenant.
CREATE TABLE ops.usage_minutes (
    org_id   text        NOT NULL,
    minute   timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    -- Sessions members-fn issued.
    logins   bigint      NOT NULL DEFAULT 0 CHECK (logins >= 0),
    -- Requests whose tenant became known (voting token, session, S2S key, login, receipt).
    requests bigint      NOT NULL DEFAULT 0 CHECK (requests >= 0),
    -- Votes ingest accepted (202 or 201).
    votes    bigint      NOT NULL DEFAULT 0 CHECK (votes >= 0),
    PRIMARY KEY (org_id, minute)
);
CREATE INDEX usage_minutes_minute_idx ON ops.usage_minutes (minute);

-- Votes accepted per second (only seconds with votes), summed over every ingest instance: the
-- peak is the largest.
CREATE TABLE ops.usage_vote_seconds (
    org_id text        NOT NULL,
    second timestamptz NOT NULL CHECK (second = date_trunc('second', second)),
    votes  bigint      NOT NULL CHECK (votes > 0),
    PRIMARY KEY (org_id, second)
);
CREATE INDEX usage_vote_seconds_second_idx ON ops.usage_vote_seconds (second);

-- Adds one instance's counts (arrays of equal length; the same key twice is added twice). The
-- services may add, never rewrite or delete.
CREATE FUNCTION ops.add_usage(
    p_org text[], p_minute timestamptz[], p_logins bigint[], p_requests bigint[], p_votes bigint[],
    p_vote_org text[], p_vote_second timestamptz[], p_vote_count bigint[])
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ops.usage_minutes AS u (org_id, minute, logins, requests, votes)
    SELECT o, date_trunc('minute', m), sum(l), sum(r), sum(v)
      FROM unnest(p_org, p_minute, p_logins, p_requests, p_votes) AS t(o, m, l, r, v)
     GROUP BY 1, 2
    ON CONFLICT (org_id, minute) DO UPDATE
       SET logins = u.logins + excluded.logins,
           requests = u.requests + excluded.requests,
           votes = u.votes + excluded.votes;
    INSERT INTO ops.usage_vote_seconds AS s (org_id, second, votes)
    SELECT o, date_trunc('second', sec), sum(v)
      FROM unnest(p_vote_org, p_vote_second, p_vote_count) AS t(o, sec, v)
     GROUP BY 1, 2
    ON CONFLICT (org_id, second) DO UPDATE SET votes = s.votes + excluded.votes;
$$;
REVOKE EXECUTE ON FUNCTION ops.add_usage(text[], timestamptz[], bigint[], bigint[], bigint[], text[], timestamptz[], bigint[]) FROM PUBLIC;
GRANT USAGE ON SCHEMA ops TO ekklesia_members;
GRANT EXECUTE ON FUNCTION ops.add_usage(text[], timestamptz[], bigint[], bigint[], bigint[], text[], timestamptz[], bigint[])
    TO ekklesia_ingest, ekklesia_events, ekklesia_members;
