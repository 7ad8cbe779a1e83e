-- The meeting console's live counters (events-svc's GET /v1/ops/live, platform operators only).
-- events-svc may read nothing of the elections schema; this function hands it counts per
-- election that is open or closed and not sealed yet, and nothing else: no ballot, no receipt,
-- no token hash, no choice. Expand only: a new function and a grant.
--
--   accepted          queue-mode votes ingest answered 202 for, as far as its ledger is flushed
--                     (elections.accepted_votes; direct-mode votes are not in it)
--   undecided         of those, the ones with no outcome yet, and the age of the oldest
--   recorded          ballots in the election's (encrypted) ballot box: both modes
CREATE FUNCTION ops.live_votes()
    RETURNS TABLE (org_id text, election_id uuid, status text, closes_at timestamptz,
                   accepted bigint, undecided bigint, oldest_undecided_seconds double precision,
                   recorded bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT e.org_id, e.id, e.status, e.closes_at,
               (SELECT count(*) FROM elections.accepted_votes a WHERE a.election_id = e.id),
               u.undecided,
               extract(epoch FROM now() - u.oldest)::double precision,
               (SELECT count(*) FROM elections.ballot_box b WHERE b.election_id = e.id)
          FROM elections.elections e
          CROSS JOIN LATERAL (
                SELECT count(*) AS undecided, min(a.accepted_at) AS oldest
                  FROM elections.accepted_votes a
                 WHERE a.election_id = e.id
                   AND NOT EXISTS (SELECT 1 FROM elections.receipts r WHERE r.receipt = a.receipt)) u
         WHERE e.status = 'open' OR (e.status = 'closed' AND e.sealed_at IS NULL)
         ORDER BY e.org_id, e.id
    $$;
REVOKE EXECUTE ON FUNCTION ops.live_votes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ops.live_votes() TO ekklesia_events;
