-- Login: a person proves a national id; members-fn needs that person's memberships across
-- tenants before it knows which tenant the session is for. RLS keeps members.members per
-- tenant, so this one lookup goes through a SECURITY DEFINER function that answers only for
-- the national id asked about, and only the members role may call it.
CREATE INDEX members_national_id_idx ON members.members (national_id);

CREATE FUNCTION members.memberships_of(p_national_id text)
    RETURNS TABLE (org_id text, member_id uuid, roles text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT m.org_id, m.id, m.roles FROM members.members m
        WHERE m.national_id = p_national_id ORDER BY m.org_id
    $$;
REVOKE EXECUTE ON FUNCTION members.memberships_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION members.memberships_of(text) TO ekklesia_members;

-- Which member received a voting token is recorded (one per member and election); listing
-- elections shows each member whether they already have theirs.
CREATE INDEX token_issuance_member_idx ON events.token_issuance (org_id, member_id);
