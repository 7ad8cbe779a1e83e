use super::*;

fn whats(sql: &str) -> Vec<String> {
    contractions(sql).into_iter().map(|c| c.what).collect()
}

fn refused(sql: &str) -> bool {
    !contractions(sql).is_empty()
}

/// The statements the policy refuses, each alone in a migration.
#[test]
fn contract_statements_are_refused() {
    for sql in [
        "DROP TABLE elections.receipts;",
        "drop table if exists elections.receipts cascade;",
        "DROP FUNCTION elections.drained(uuid, timestamptz, interval);",
        "DROP SCHEMA ops CASCADE;",
        "DROP VIEW ops.v;",
        "DROP POLICY tenant ON elections.ballots;",
        "ALTER TABLE elections.receipts DROP COLUMN reason;",
        "ALTER TABLE elections.receipts DROP reason;",
        "ALTER TABLE ONLY elections.receipts DROP COLUMN IF EXISTS reason;",
        "ALTER TABLE elections.receipts DROP CONSTRAINT receipts_pkey;",
        "ALTER TABLE elections.receipts RENAME COLUMN reason TO why;",
        "ALTER TABLE elections.receipts RENAME reason TO why;",
        "ALTER TABLE elections.receipts RENAME TO outcomes;",
        "ALTER TABLE elections.receipts SET SCHEMA ops;",
        "ALTER FUNCTION elections.drained(uuid, timestamptz, interval) RENAME TO is_drained;",
        "ALTER SCHEMA ops RENAME TO operations;",
        "ALTER TABLE elections.receipts ALTER COLUMN reason SET NOT NULL;",
        "ALTER TABLE elections.receipts ALTER reason SET NOT NULL;",
        "ALTER TABLE elections.receipts ALTER COLUMN reason TYPE varchar(40);",
        "ALTER TABLE elections.receipts ALTER COLUMN reason SET DATA TYPE varchar(40);",
        "ALTER TABLE events.elections ALTER COLUMN status DROP DEFAULT;",
        "ALTER TABLE elections.receipts ADD CONSTRAINT short CHECK (length(reason) < 40);",
        "ALTER TABLE elections.receipts ADD CONSTRAINT short CHECK (length(reason) < 40) NOT VALID;",
        "ALTER TABLE elections.receipts ADD CHECK (reason <> '');",
        "ALTER TABLE elections.receipts ADD UNIQUE (org_id, reason);",
        "ALTER TABLE elections.ballots ADD FOREIGN KEY (election_id) REFERENCES elections.elections (id);",
        "ALTER TABLE elections.ballots ADD CONSTRAINT ballots_election_id_fkey FOREIGN KEY (election_id) REFERENCES elections.elections (id);",
        "ALTER TABLE elections.receipts ADD COLUMN seen boolean NOT NULL;",
        "ALTER TABLE elections.receipts ADD COLUMN n bigint PRIMARY KEY;",
        "CREATE UNIQUE INDEX receipts_reason ON elections.receipts (reason);",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS r ON ONLY elections.receipts (reason);",
        "REVOKE DELETE ON members.members FROM ekklesia_members;",
        "REVOKE UPDATE (used) ON elections.voting_tokens FROM ekklesia_worker;",
        "REVOKE EXECUTE ON FUNCTION public.app_org_id() FROM PUBLIC;",
        "REVOKE ALL ON ALL TABLES IN SCHEMA elections FROM ekklesia_ingest;",
        "REVOKE ekklesia_ingest FROM ingest_dev;",
        "ALTER TABLE ops.worker_progress ENABLE ROW LEVEL SECURITY;",
        "ALTER TABLE ops.worker_progress FORCE ROW LEVEL SECURITY;",
        "CREATE POLICY only_some ON elections.receipts AS RESTRICTIVE USING (false);",
        "CREATE TRIGGER refuse BEFORE INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
        "CREATE CONSTRAINT TRIGGER c AFTER INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
        "TRUNCATE elections.accepted_votes;",
        "DO $$ BEGIN EXECUTE 'DROP TABLE ops.s2s_nonces'; END $$;",
        "DO $body$ BEGIN ALTER TABLE ops.s2s_nonces DROP COLUMN seen_at; END $body$;",
        // Several actions in one ALTER TABLE: the second one contracts.
        "ALTER TABLE elections.receipts ADD COLUMN note text, DROP COLUMN reason;",
    ] {
        assert!(refused(sql), "not refused: {sql}");
    }
}

/// What expands the schema, or only touches what the same migration creates, passes.
#[test]
fn expand_statements_pass() {
    for sql in [
        "CREATE TABLE ops.t (id bigint PRIMARY KEY, v text NOT NULL CHECK (v <> ''));",
        "ALTER TABLE elections.receipts ADD COLUMN note text;",
        "ALTER TABLE elections.receipts ADD COLUMN IF NOT EXISTS note text;",
        "ALTER TABLE elections.receipts ADD COLUMN seen boolean NOT NULL DEFAULT false;",
        "ALTER TABLE elections.receipts ADD COLUMN note text CHECK (note <> '') REFERENCES ops.notes (id);",
        "ALTER TABLE elections.receipts ALTER COLUMN reason DROP NOT NULL;",
        "ALTER TABLE elections.receipts ALTER COLUMN reason SET DEFAULT 'x';",
        "ALTER TABLE elections.voting_tokens SET (fillfactor = 70);",
        "CREATE INDEX receipts_reason ON elections.receipts (reason);",
        "DROP INDEX elections.receipts_reason;",
        "CREATE OR REPLACE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
        // A function body is not executed by the migration.
        "CREATE FUNCTION ops.g() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE x; END $$;",
        "GRANT SELECT ON elections.receipts TO ekklesia_events;",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA ops REVOKE ALL ON TABLES FROM PUBLIC;",
        "CREATE POLICY tenant ON elections.receipts USING (org_id = app_org_id());",
        "CREATE TRIGGER audit AFTER INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
        "DO $$ BEGIN EXECUTE format('CREATE ROLE %I NOLOGIN', 'r'); END $$;",
        "UPDATE events.elections SET slots_registered = 0 WHERE slots_registered IS NULL;",
        // Comments and strings that merely mention a contract are not one.
        "-- DROP TABLE elections.receipts;\nCOMMENT ON TABLE ops.t IS 'never DROP TABLE this';",
        "/* ALTER TABLE x DROP COLUMN y; /* nested */ */ SELECT 1;",
    ] {
        assert_eq!(whats(sql), Vec::<String>::new(), "refused: {sql}");
    }
}

/// Tightening a table this migration creates, or columns it adds, breaks no older release.
#[test]
fn what_the_migration_itself_creates_may_be_tightened() {
    let sql = "
        CREATE TABLE ops.t (id bigint, note text);
        ALTER TABLE ops.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);
        ALTER TABLE ops.t ALTER COLUMN note SET NOT NULL;
        ALTER TABLE ops.t ENABLE ROW LEVEL SECURITY;
        CREATE UNIQUE INDEX t_note ON ops.t (note);
        CREATE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
        REVOKE EXECUTE ON FUNCTION ops.f() FROM PUBLIC;
        REVOKE ALL ON ops.t FROM PUBLIC;
        ALTER TABLE events.elections
            ADD COLUMN slot_key_id text,
            ADD COLUMN slots_registered bigint NOT NULL DEFAULT 0,
            ADD CONSTRAINT slots_keyed CHECK (slots_registered = 0 OR slot_key_id IS NOT NULL);
    ";
    assert_eq!(whats(sql), Vec::<String>::new());
    // The same check on a column that was there before is a tightening.
    assert!(refused(
        "ALTER TABLE events.elections ADD COLUMN k text, \
         ADD CONSTRAINT c CHECK (k IS NOT NULL OR max_choices = 1);"
    ));
    // A function created with OR REPLACE may be one the older release calls.
    assert!(refused(
        "CREATE OR REPLACE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
         REVOKE EXECUTE ON FUNCTION ops.f() FROM PUBLIC;"
    ));
}

#[test]
fn findings_name_the_line() {
    let found =
        contractions("-- header\nCREATE TABLE a (x int);\n\nALTER TABLE b\n  DROP COLUMN c;\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 4);
    assert!(found[0].what.contains("b.c"), "{}", found[0].what);
}

fn grandfathered() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
    GRANDFATHERED
        .iter()
        .map(|(name, _)| {
            let sql = std::fs::read_to_string(dir.join(name)).expect("read migration");
            (name.to_string(), sql)
        })
        .collect()
}

const BAD: &str = "-- Expand? No.\nALTER TABLE members.members DROP COLUMN removed_at;\n";

#[test]
fn an_unmarked_contract_step_is_refused() {
    let mut files = grandfathered();
    files.push(("20261210000014_drop_removed_at.sql".into(), BAD.into()));
    let findings = check_files(&files);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let Finding::Refused { file, contractions } = &findings[0] else {
        panic!("{findings:?}");
    };
    assert_eq!(file, "20261210000014_drop_removed_at.sql");
    assert_eq!(contractions[0].line, 2);
    assert!(findings[0].to_string().contains("-- contract:"));
}

#[test]
fn a_contract_step_marked_with_an_earlier_migration_is_accepted() {
    let mut files = grandfathered();
    let marked = format!("-- contract: 20261201000010_member_soft_delete\n{BAD}");
    files.push(("20261210000014_drop_removed_at.sql".into(), marked));
    assert_eq!(check_files(&files), Vec::new());
}

#[test]
fn a_marker_must_name_an_earlier_migration() {
    for (marker, expect) in [
        ("20261201000099_nothing", "not a migration here"),
        ("20261210000014_drop_removed_at", "not earlier"),
        ("20261210000015_later", "not earlier"),
    ] {
        let mut files = grandfathered();
        files.push((
            "20261210000014_drop_removed_at.sql".into(),
            format!("-- contract: {marker}\n{BAD}"),
        ));
        files.push(("20261210000015_later.sql".into(), "SELECT 1;".into()));
        let findings = check_files(&files);
        assert_eq!(findings.len(), 1, "{marker}: {findings:?}");
        assert!(
            findings[0].to_string().contains(expect),
            "{marker}: {}",
            findings[0]
        );
    }
}

#[test]
fn grandfathered_migrations_pass_unchanged_and_are_refused_edited_or_missing() {
    let files = grandfathered();
    assert_eq!(check_files(&files), Vec::new());

    let mut edited = files.clone();
    edited[3]
        .1
        .push_str("\n-- a harmless comment is still an edit\n");
    assert_eq!(
        check_files(&edited),
        vec![Finding::Edited {
            file: "20261125000004_ops.sql".into()
        }]
    );

    let mut missing = files.clone();
    missing.remove(5);
    assert_eq!(
        check_files(&missing),
        vec![Finding::Missing {
            file: "20261126000006_batch_writer.sql".into()
        }]
    );
}

/// The grandfathered checksums are the ones sqlx embeds (and stores in `_sqlx_migrations`).
#[test]
fn grandfathered_checksums_are_sqlx_checksums() {
    for (name, checksum) in GRANDFATHERED {
        let version = version_of(name).expect("a version");
        let migration = crate::db::MIGRATOR
            .iter()
            .find(|m| m.version == version)
            .expect("embedded");
        assert_eq!(hex::encode(&migration.checksum), *checksum, "{name}");
    }
}

/// The repository's own migrations pass (CI runs infra/local/migration-check.sh as well).
#[test]
fn the_repository_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
    let findings = check_dir(&dir).expect("read infra/migrations");
    assert!(
        findings.is_empty(),
        "{}",
        findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What the policy would have said of the grandfathered migrations, had they been new: they
/// are the reason for the list (and a regression check on the rules).
#[test]
fn the_grandfathered_migrations_that_contract_are_the_known_ones() {
    let contracting: Vec<&str> = grandfathered()
        .iter()
        .filter(|(_, sql)| !contractions(sql).is_empty())
        .map(|(name, _)| GRANDFATHERED.iter().find(|(n, _)| n == name).unwrap().0)
        .collect();
    assert_eq!(
        contracting,
        [
            "20261125000001_schemas_roles.sql",
            "20261126000006_batch_writer.sql",
            "20261201000008_vote_integrity.sql",
            "20261201000010_member_soft_delete.sql",
        ]
    );
}
