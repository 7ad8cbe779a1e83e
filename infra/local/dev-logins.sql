-- Local development and test logins for the service roles the migrations create.
-- Password = login name: for the loopback-only local stack and tests, never for production
-- (there, Cloud SQL IAM users are granted these roles; see infra/terraform).
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('ingest_dev', 'ekklesia_ingest'),
        ('worker_dev', 'ekklesia_worker'),
        ('events_dev', 'ekklesia_events'),
        ('members_dev', 'ekklesia_members')) AS v(login, grp)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.login) THEN
            EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', r.login, r.login, r.grp);
        END IF;
    END LOOP;
END $$;
