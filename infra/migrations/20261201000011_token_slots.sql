-- Token slots (security review C2): voting-token ids are derived from a per-tenant secret and a
-- slot number, and the elections side learns their hashes in shuffled batches before anyone asks
-- for a token. Issuing a token then only takes the next slot number here, so nothing written on
-- either side pairs a member with a token hash by row or transaction order. Per election, the
-- events side keeps which slot key it used and two counters -- never a token, its id or its hash.
ALTER TABLE events.elections
    -- Id of the TOKEN_SLOT_KEYS entry the slots were derived with (NULL: nothing registered).
    ADD COLUMN slot_key_id      text,
    -- Slots 0 .. slots_registered-1 are registered with the elections side.
    ADD COLUMN slots_registered bigint NOT NULL DEFAULT 0,
    -- Slots 0 .. slots_issued-1 were handed out, one per member, in this order.
    ADD COLUMN slots_issued     bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT slots_keyed CHECK (slots_registered = 0 OR slot_key_id IS NOT NULL),
    -- Never hand out a slot whose hash the elections side does not know: a token that cannot vote.
    ADD CONSTRAINT slots_issued_registered CHECK (slots_issued BETWEEN 0 AND slots_registered);

-- How many slots an election needs when it opens: the size of the caller's registry. RLS keeps
-- members.members to members-fn, so events-svc gets this one number through a function that
-- counts only the tenant of the current transaction (none when it is unset).
CREATE FUNCTION events.tenant_member_count()
    RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT count(*) FROM members.members WHERE org_id = public.app_org_id() AND removed_at IS NULL $$;
REVOKE EXECUTE ON FUNCTION events.tenant_member_count() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.tenant_member_count() TO ekklesia_events;
