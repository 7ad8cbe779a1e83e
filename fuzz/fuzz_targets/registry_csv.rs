//! The party's membership export (`members_fn::registry::parse_csv`), which `members-import`
//! reads.
//!
//! Properties: never panics; what parses has distinct, valid national ids and the `member` role
//! first, each role once; written out again as CSV (national_id, name, roles) it parses to the
//! same records; an error names lines and problems but never shows a national id, not even one
//! that sits in the wrong column. Each input is read as a party's export and as the platform
//! organisation's; only the platform's may give anyone the `ops` role.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use members_fn::national_id::NationalId;
use members_fn::registry::{parse_csv, ImportError, MemberRecord};
use shared::domain::TenantId;
use shared::session::Role;

fn write_csv(records: &[MemberRecord]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(["national_id", "name", "roles"])
        .expect("write to memory");
    for record in records {
        let roles: Vec<&str> = record.roles.iter().map(|r| r.as_str()).collect();
        writer
            .write_record([record.national_id.as_str(), &record.name, &roles.join(";")])
            .expect("write to memory");
    }
    writer.into_inner().expect("flush to memory")
}

/// Any ten digits in a row in `text` that form a valid national id.
fn national_id_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(9))
        .map(|at| &bytes[at..at + 10])
        .filter(|window| window.iter().all(u8::is_ascii_digit))
        .filter_map(|window| std::str::from_utf8(window).ok())
        .find(|candidate| NationalId::parse(candidate).is_ok())
        .map(str::to_owned)
}

fuzz_target!(|data: &[u8]| {
    let platform = TenantId::parse("platform").expect("a valid organisation");
    let party = TenantId::parse("party-a").expect("a valid organisation");
    check(data, &party, &platform);
    check(data, &platform, &platform);
});

fn check(data: &[u8], org: &TenantId, platform: &TenantId) {
    match parse_csv(data, org, platform) {
        Ok(records) => {
            assert!(!records.is_empty());
            let mut seen = HashSet::new();
            for record in &records {
                assert!(
                    seen.insert(record.national_id.clone()),
                    "a national id twice"
                );
                assert_eq!(
                    NationalId::parse(record.national_id.as_str()).as_ref(),
                    Ok(&record.national_id)
                );
                assert_eq!(record.roles.first(), Some(&Role::Member));
                let roles: HashSet<_> = record.roles.iter().collect();
                assert_eq!(roles.len(), record.roles.len(), "a role twice");
                assert!(
                    org == platform || !record.roles.contains(&Role::Ops),
                    "ops in a party's export"
                );
            }
            let again = parse_csv(write_csv(&records).as_slice(), org, platform)
                .unwrap_or_else(|e| panic!("written records do not parse: {e}"));
            assert_eq!(again, records, "records change when written and read again");
        }
        Err(error) => {
            let text = error.to_string();
            if let ImportError::Invalid(problems) = &error {
                assert!(!problems.is_empty());
            }
            if let Some(id) = national_id_in(&text) {
                // Unless the input never held it (line numbers are short): then it is no leak.
                let input = String::from_utf8_lossy(data);
                assert!(
                    !input.contains(&id),
                    "the error shows a national id: {text}"
                );
            }
        }
    }
}
