-- Edge hardening: token issuance re-reads the registry (security review L15), and OIDC logins
-- are started, and remembered, by members-fn (M10).

-- 1. Whether a member id is an active member of the current tenant.
--
-- events-svc issued a voting token on the session's claims alone, so a member removed from the
-- registry (migration 10) kept getting tokens until their session expired. events-svc has no
-- privilege on members.members; this one question goes through a SECURITY DEFINER function
-- that answers for the tenant of the calling transaction (app.org_id) only: a member id of
-- another tenant, or no tenant set, is "not a member". The table's owner is not subject to RLS,
-- hence the explicit tenant condition.
CREATE FUNCTION members.is_active_member(p_member_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT EXISTS (
            SELECT 1 FROM members.members m
            WHERE m.id = p_member_id AND m.org_id = public.app_org_id() AND m.removed_at IS NULL
        )
    $$;
REVOKE EXECUTE ON FUNCTION members.is_active_member(uuid) FROM PUBLIC;
-- USAGE lets events-svc name the function; it grants no privilege on the schema's tables.
GRANT USAGE ON SCHEMA members TO ekklesia_events;
GRANT EXECUTE ON FUNCTION members.is_active_member(uuid) TO ekklesia_events;

-- 2. OIDC login attempts (GET /v1/auth/oidc/start until the provider redirects back).
--
-- members-fn generates state, nonce and the PKCE verifier itself and binds them to the browser
-- with a cookie naming the attempt, so an authorization code is redeemed only by the browser
-- whose login asked for it, with the verifier and nonce of that login, once. The cookie's value
-- is stored only as its SHA-256: a reader of this table cannot finish someone else's login.
-- No tenant is known yet at login (as for members.memberships_of), so the table has no RLS;
-- only members-fn may use it. Rows are kept an hour past expiry (so a late or repeated
-- callback is told "expired" or "replayed" rather than "unknown"), then deleted by members-fn.
CREATE TABLE members.login_attempts (
    id_hash       bytea       PRIMARY KEY CHECK (length(id_hash) = 32),
    state         text        NOT NULL CHECK (length(state) BETWEEN 32 AND 128),
    nonce         text        NOT NULL CHECK (length(nonce) BETWEEN 32 AND 128),
    code_verifier text        NOT NULL CHECK (length(code_verifier) BETWEEN 43 AND 128),
    -- The organisation the person asked to log in to (`?org=`), if any.
    org_id        text,
    -- Where the page that started the login wants to go afterwards: a path on this site.
    return_to     text        CHECK (length(return_to) <= 512),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX login_attempts_expires_at_idx ON members.login_attempts (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON members.login_attempts TO ekklesia_members;
