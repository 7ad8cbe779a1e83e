-- Platform operations (security review H1, L14).
--
-- The queue flag is platform-wide, so only platform operators may change it: members with the
-- `ops` role in the platform organisation (events-svc's `PLATFORM_ORG`, whose registry the
-- platform team loads; members-import refuses `ops` in any other organisation's export).
--
-- 1. The audit names the database user as well as the actor. The actor is what the caller says
--    (events-svc: `member:<id>@<org>`; the queue-mode CLI: its free-text `--actor`);
--    `session_user` is the login that made the change and cannot be chosen by the caller
--    (a SECURITY DEFINER function changes current_user, never session_user).
-- 2. Changes through events-svc are rate-limited platform-wide, in the database, so that every
--    instance shares one limit: at most one change per interval, counted from the last change
--    by any path (the CLI's included).

-- Rows written before this migration have no database user (NULL); every later row has one.
ALTER TABLE ops.queue_mode_audit ADD COLUMN database_user text;
ALTER TABLE ops.queue_mode_audit ALTER COLUMN database_user SET DEFAULT session_user;

-- Same signature and answer as before (migration 4; callers and grants unchanged), now also
-- recording session_user. The queue-mode CLI calls this one: the emergency path, not limited.
CREATE OR REPLACE FUNCTION ops.set_queue_mode(p_enabled boolean, p_actor text)
    RETURNS TABLE (old_enabled boolean, new_enabled boolean, changed_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v_old boolean;
BEGIN
    IF p_actor IS NULL OR length(trim(p_actor)) = 0 THEN
        RAISE EXCEPTION 'queue mode change needs an actor' USING ERRCODE = '22023';
    END IF;
    SELECT q.enabled INTO v_old FROM ops.queue_mode q WHERE q.singleton FOR UPDATE;
    INSERT INTO ops.queue_mode (singleton, enabled, changed_at, changed_by)
        VALUES (true, p_enabled, now(), p_actor)
        ON CONFLICT (singleton) DO UPDATE
        SET enabled = excluded.enabled, changed_at = excluded.changed_at, changed_by = excluded.changed_by;
    INSERT INTO ops.queue_mode_audit (changed_by, old_enabled, new_enabled, database_user)
        VALUES (p_actor, v_old, p_enabled, session_user);
    RETURN QUERY SELECT v_old, p_enabled, now();
END $$;

-- events-svc's path: changes the flag (through ops.set_queue_mode, so audited the same way)
-- unless the last change is less than p_min_interval old; then changes nothing and answers how
-- long to wait.
CREATE FUNCTION ops.change_queue_mode(p_enabled boolean, p_actor text, p_min_interval interval)
    RETURNS TABLE (changed boolean, retry_after_ms bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v_wait interval;
BEGIN
    -- Serialises changes (the flag's row may not exist yet, the audit table always does), so
    -- two instances cannot both find the last change old enough. Self-conflicting and in
    -- conflict with the INSERT of ops.set_queue_mode; readers are not blocked.
    LOCK TABLE ops.queue_mode_audit IN SHARE ROW EXCLUSIVE MODE;
    SELECT max(a.changed_at) + p_min_interval - clock_timestamp() INTO v_wait
        FROM ops.queue_mode_audit a;
    IF v_wait > interval '0' THEN
        RETURN QUERY SELECT false, ceil(extract(epoch FROM v_wait) * 1000)::bigint;
        RETURN;
    END IF;
    PERFORM ops.set_queue_mode(p_enabled, p_actor);
    RETURN QUERY SELECT true, 0::bigint;
END $$;
REVOKE EXECUTE ON FUNCTION ops.change_queue_mode(boolean, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ops.change_queue_mode(boolean, text, interval) TO ekklesia_events;
