-- A member's id is stable for as long as the tenant exists (security review M9).
--
-- Voting tokens are issued once per (election, member id) (events.token_issuance). The import
-- used to DELETE people missing from the export and re-insert them with a fresh id when they
-- came back, so someone dropped from one nightly export and present in the next logged in as a
-- new member and took a second token for the same election. Removal is now a mark: the row
-- and its id stay, a re-import clears the mark, and login ignores marked rows.
ALTER TABLE members.members ADD COLUMN removed_at timestamptz;

-- Same signature, so the existing grants (members role only, not PUBLIC) carry over.
CREATE OR REPLACE FUNCTION members.memberships_of(p_national_id text)
    RETURNS TABLE (org_id text, member_id uuid, roles text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT m.org_id, m.id, m.roles FROM members.members m
        WHERE m.national_id = p_national_id AND m.removed_at IS NULL ORDER BY m.org_id
    $$;

-- members-fn no longer deletes: a hard delete would hand the person a fresh id on their
-- next import, which is the double token this migration closes.
REVOKE DELETE ON members.members FROM ekklesia_members;
