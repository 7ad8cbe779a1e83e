-- Schemas, service roles and the tenant setting every row-level-security policy keys on.
--
-- Roles are cluster-wide, so creation is idempotent (tests create one database per test and run
-- these migrations in each). The roles are NOLOGIN group roles: a deployment grants them to its
-- login users (Cloud SQL IAM users in production, password users in the local stack), so no
-- credential ever lives in a migration.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ekklesia_members', 'ekklesia_events', 'ekklesia_ingest', 'ekklesia_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

-- Nobody but the owner may create objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA members;
CREATE SCHEMA events;
CREATE SCHEMA elections;
CREATE SCHEMA ops;

-- The tenant of the current transaction, set with `SELECT set_config('app.org_id', $1, true)`.
-- Unset (NULL or '') matches no row: a forgotten tenant reads nothing rather than everything.
CREATE FUNCTION public.app_org_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.org_id', true), '') $$;
GRANT EXECUTE ON FUNCTION public.app_org_id() TO PUBLIC;
