-- What a restore must bring back, as sorted text: roles, memberships, owners, grants,
-- row-level security and its policies, functions, the migrations recorded, and every
-- election's state, counts, tally (the elections side's query) and ballot box. Background
-- state that changes with every running service (ingest ledger heartbeats, S2S nonces, login
-- attempts, worker progress) is left out.
--
-- Run it before and after a restore and diff the two (infra/local/restore-drill.sh does;
-- docs/restore.md on Cloud SQL):
--   psql -X -At -F ' | ' "$URL" -f infra/local/restore-check.sql > before.txt
-- As the database owner (table owners are not subject to row-level security) or a superuser.
-- Privileges are compared as they take effect (a NULL ACL is the default one, acldefault): pg_dump
-- leaves out a grant that equals the default, so a restored object may carry NULL for it.
SELECT 'role', rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls
  FROM pg_roles WHERE rolname LIKE 'ekklesia%' OR rolname LIKE '%\_dev' ORDER BY 2;
SELECT 'member of', r.rolname, m.rolname FROM pg_auth_members a
  JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
 WHERE r.rolname LIKE 'ekklesia%' ORDER BY 2, 3;
SELECT 'schema', n.nspname, pg_get_userbyid(n.nspowner), coalesce(n.nspacl, acldefault('n', n.nspowner))::text
  FROM pg_namespace n WHERE n.nspname IN ('public', 'members', 'events', 'elections', 'ops') ORDER BY 2;
SELECT 'relation', c.oid::regclass, c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity,
       c.relforcerowsecurity, coalesce(g.grants, '-')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL (SELECT string_agg(coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC')
                                       || ':' || a.privilege_type, ',' ORDER BY 1) AS grants
                       FROM aclexplode(CASE WHEN c.relkind IN ('i', 'I') THEN NULL  -- indexes have none
                                            ELSE coalesce(c.relacl, acldefault(
                                              (CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char",
                                              c.relowner)) END) a) g ON true
 WHERE n.nspname IN ('members', 'events', 'elections', 'ops') ORDER BY c.oid::regclass::text;
SELECT 'column grant', c.oid::regclass, at.attname, at.attacl::text
  FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('members', 'events', 'elections', 'ops') AND at.attacl IS NOT NULL
 ORDER BY c.oid::regclass::text, 3;
SELECT 'function', p.oid::regprocedure, pg_get_userbyid(p.proowner), p.prosecdef,
       coalesce(p.proconfig::text, '-'), coalesce(p.proacl, acldefault('f', p.proowner))::text, md5(p.prosrc)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('public', 'members', 'events', 'elections', 'ops') ORDER BY p.oid::regprocedure::text;
SELECT 'policy', schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check
  FROM pg_policies ORDER BY 2, 3, 4;
SELECT 'migration', version, encode(checksum, 'hex'), success FROM _sqlx_migrations ORDER BY 2;
SELECT 'database', datname, pg_get_userbyid(datdba), coalesce(datacl, acldefault('d', datdba))::text FROM pg_database
 WHERE datname = current_database();
-- The data: every election's state and counts, and its tally by the elections side's query.
SELECT 'election', e.org_id, e.id, e.status, e.closed_at, e.sealed_at,
       (SELECT count(*) FROM elections.voting_tokens t WHERE t.election_id = e.id),
       (SELECT count(*) FROM elections.voting_tokens t WHERE t.election_id = e.id AND t.used),
       (SELECT count(*) FROM elections.ballots b WHERE b.election_id = e.id),
       (SELECT count(*) FROM elections.ballot_box b WHERE b.election_id = e.id),
       (SELECT count(*) FROM elections.receipts r WHERE r.election_id = e.id AND r.status = 'recorded'),
       (SELECT count(*) FROM elections.receipts r WHERE r.election_id = e.id AND r.status = 'rejected'),
       (SELECT count(*) FROM elections.accepted_votes a WHERE a.election_id = e.id)
  FROM elections.elections e ORDER BY 3;
SELECT 'tally', b.election_id, c, count(*) FROM elections.ballots b, unnest(b.choices) AS c GROUP BY 2, 3 ORDER BY 2, 3;
SELECT 'ballot box', election_id, md5(string_agg(encode(sealed, 'hex'), ',' ORDER BY sealed))
  FROM elections.ballot_box GROUP BY 2 ORDER BY 2;
SELECT 'events election', e.org_id, e.id, e.status, e.slot_key_id, e.slots_registered, e.slots_issued,
       (SELECT count(*) FROM events.token_issuance i WHERE i.election_id = e.id)
  FROM events.elections e ORDER BY 3;
SELECT 'members', org_id, count(*), count(removed_at) FROM members.members GROUP BY 2 ORDER BY 2;
SELECT 'queue mode changes', count(*) FROM ops.queue_mode_audit;
