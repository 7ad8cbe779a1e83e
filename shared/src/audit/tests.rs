use super::*;

fn key() -> AuditKey {
    AuditKey::new(vec![7; 32]).unwrap()
}

/// A chain of `n` entries as `append` writes them.
fn chain(key: &AuditKey, n: i64) -> Vec<Entry> {
    let mut prev = GENESIS.to_vec();
    (1..=n)
        .map(|seq| {
            let mut e = Entry {
                chain: "party-a".into(),
                seq,
                at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + seq).unwrap(),
                event: "tokens_registered".into(),
                election_id: Some(Uuid::from_u128(seq as u128)),
                queue_mode_change: None,
                change_mac: None,
                actor: "party-a-s2s".into(),
                summary: format!("{{\"received\":{seq}}}"),
                prev_mac: prev.clone(),
                mac: Vec::new(),
            };
            e.mac = mac_of(key, &e, seq).to_vec();
            prev = e.mac.clone();
            e
        })
        .collect()
}

fn finding(entries: Vec<Entry>) -> Option<Finding> {
    let mut entries = entries;
    entries.sort_by_key(|e| e.seq);
    diagnose(&key(), "party-a", entries, &[]).finding
}

#[test]
fn an_intact_chain_verifies_and_each_tampering_is_named() {
    let key = key();
    assert_eq!(finding(chain(&key, 6)), None);
    assert_eq!(finding(Vec::new()), None);

    let mut edited = chain(&key, 6);
    edited[2].summary = "{\"received\":999}".into();
    assert_eq!(finding(edited), Some(Finding::Edited { seq: 3 }));

    let mut deleted = chain(&key, 6);
    deleted.remove(2);
    assert_eq!(finding(deleted), Some(Finding::Deleted { from: 3, to: 3 }));
    let mut first_gone = chain(&key, 3);
    first_gone.remove(0);
    assert_eq!(
        finding(first_gone),
        Some(Finding::Deleted { from: 1, to: 1 })
    );

    // A forged entry slipped in after #3: the later ones moved up one place.
    let mut inserted = chain(&key, 6);
    let mut forged = inserted[2].clone();
    forged.summary = "{\"received\":1000}".into();
    forged.prev_mac = inserted[2].mac.clone();
    forged.mac = vec![1; 32];
    for e in &mut inserted[3..] {
        e.seq += 1;
    }
    forged.seq = 4;
    inserted.push(forged);
    assert_eq!(finding(inserted), Some(Finding::Inserted { seq: 4 }));

    let mut swapped = chain(&key, 6);
    swapped[1].seq = 3;
    swapped[2].seq = 2;
    assert_eq!(
        finding(swapped),
        Some(Finding::Reordered {
            seq: 2,
            written_as: 3
        })
    );

    let mut appended = chain(&key, 3);
    let mut forged = appended[2].clone();
    forged.seq = 4;
    forged.prev_mac = appended[2].mac.clone();
    forged.mac = vec![2; 32];
    appended.push(forged);
    assert_eq!(finding(appended), Some(Finding::NotAuthentic { seq: 4 }));
}

#[test]
fn another_key_verifies_nothing() {
    let entries = chain(&key(), 3);
    let other = AuditKey::new(vec![8; 32]).unwrap();
    let verdict = diagnose(&other, "party-a", entries, &[]);
    assert_eq!(verdict.authentic, 0);
    assert!(!verdict.intact());
}

#[test]
fn the_key_is_never_printed_and_must_be_long_enough() {
    let raw = AuditKey::generate_base64();
    let key = AuditKey::from_base64(&raw).unwrap();
    assert!(!format!("{key:?}").contains(&raw));
    assert!(AuditKey::from_base64(&B64.encode([1u8; 31])).is_err());
    assert!(AuditKey::from_base64("not base64!").is_err());
}
