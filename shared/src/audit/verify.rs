//! Verifying a chain: walk it in sequence order and name its first problem.

use sqlx::PgConnection;

use super::{change_mac_of, verifies, AuditKey, Entry, QueueModeChange, GENESIS};

/// What is wrong with a chain: its first problem, by the entry's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The entry's content (or the flag change it audits) is not what was written.
    Edited { seq: i64 },
    /// Entries `from..=to` are missing: the entry after them was written after another one.
    Deleted { from: i64, to: i64 },
    /// The entry was never written with the key; the chain goes on as if it were not there.
    Inserted { seq: i64 },
    /// The entry stands at `seq` but was written as entry `written_as`.
    Reordered { seq: i64, written_as: i64 },
    /// The last entry does not verify: edited, or appended by someone without the key (with
    /// nothing after it, the two look alike).
    NotAuthentic { seq: i64 },
    /// Two genuine entries follow the same one: the writers were not serialised.
    Forked { seq: i64 },
    /// The entry is genuine, but the `ops.queue_mode_audit` row it audits was edited or deleted.
    ChangeEdited { seq: i64, change: i64 },
}

impl Finding {
    /// The sequence number of the entry the finding names.
    pub fn seq(&self) -> i64 {
        match *self {
            Self::Edited { seq }
            | Self::Inserted { seq }
            | Self::Reordered { seq, .. }
            | Self::NotAuthentic { seq }
            | Self::Forked { seq }
            | Self::ChangeEdited { seq, .. } => seq,
            Self::Deleted { from, .. } => from,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Edited { seq } => write!(f, "entry #{seq} was edited"),
            Self::Deleted { from, to } if from == to => {
                write!(
                    f,
                    "entry #{from} was deleted (#{} follows #{})",
                    to + 1,
                    from - 1
                )
            }
            Self::Deleted { from, to } => write!(
                f,
                "entries #{from} to #{to} were deleted (#{} follows #{})",
                to + 1,
                from - 1
            ),
            Self::Inserted { seq } => {
                write!(f, "entry #{seq} was inserted (not written with the key)")
            }
            Self::Reordered { seq, written_as } => {
                write!(
                    f,
                    "entry #{seq} was reordered (it was written as #{written_as})"
                )
            }
            Self::NotAuthentic { seq } => write!(
                f,
                "entry #{seq} is not authentic: edited, or inserted at the end of the chain"
            ),
            Self::Forked { seq } => write!(
                f,
                "entry #{seq} forks the chain (another genuine entry follows the same one)"
            ),
            Self::ChangeEdited { seq, change } => write!(
                f,
                "entry #{seq} is genuine, but the queue-mode change {change} it audits \
                 (ops.queue_mode_audit) was edited or deleted"
            ),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone)]
pub struct Verdict {
    pub chain: String,
    pub entries: usize,
    /// How many entries carry a MAC that verifies (0 of many: probably the wrong key).
    pub authentic: usize,
    /// The last entry, as stored (compare with the last `audit entry appended` log line).
    pub last: Option<Entry>,
    pub finding: Option<Finding>,
    /// The entry the finding names, as stored (a deleted entry's successor).
    pub named: Option<Entry>,
}

impl Verdict {
    pub fn intact(&self) -> bool {
        self.finding.is_none()
    }
}

/// Walks `chain` in sequence order and names its first problem. Run it as the database owner
/// (the services cannot read the log).
pub async fn verify(
    conn: &mut PgConnection,
    key: &AuditKey,
    chain: &str,
) -> Result<Verdict, sqlx::Error> {
    let entries = sqlx::query_as!(
        Entry,
        r#"SELECT chain, seq, at, event, election_id, queue_mode_change, change_mac, actor,
                  summary::text AS "summary!", prev_mac, mac
             FROM ops.audit_log WHERE chain = $1 ORDER BY seq"#,
        chain
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = entries.iter().filter_map(|e| e.queue_mode_change).collect();
    let changes = sqlx::query_as!(
        QueueModeChange,
        "SELECT id, changed_at, changed_by, database_user, old_enabled, new_enabled \
         FROM ops.queue_mode_audit WHERE id = ANY($1)",
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(diagnose(key, chain, entries, &changes))
}

/// The walk itself, on entries sorted by `seq` (separate from the database for unit tests).
pub fn diagnose(
    key: &AuditKey,
    chain: &str,
    entries: Vec<Entry>,
    changes: &[QueueModeChange],
) -> Verdict {
    let valid: Vec<bool> = entries.iter().map(|e| verifies(key, e, e.seq)).collect();
    // A genuine entry's flag change is as it was written, or gone.
    let change_intact = |e: &Entry| match (e.queue_mode_change, &e.change_mac) {
        (None, _) => true,
        (Some(id), Some(mac)) => changes
            .iter()
            .find(|c| c.id == id)
            .is_some_and(|c| change_mac_of(key, c).as_slice() == mac.as_slice()),
        (Some(_), None) => false,
    };
    let mut finding = None;
    let mut named = None;
    let (mut expected_seq, mut expected_prev) = (1i64, GENESIS.to_vec());
    for (i, entry) in entries.iter().enumerate() {
        if valid[i] && entry.seq == expected_seq && entry.prev_mac == expected_prev {
            if !change_intact(entry) {
                finding = Some(Finding::ChangeEdited {
                    seq: entry.seq,
                    change: entry.queue_mode_change.unwrap_or_default(),
                });
                named = Some(entry.clone());
                break;
            }
            expected_seq += 1;
            expected_prev = entry.mac.clone();
            continue;
        }
        let found = if valid[i] {
            // Genuine where it stands (the MAC covers its seq), but not after the entry before.
            if entry.seq > expected_seq {
                Finding::Deleted {
                    from: expected_seq,
                    to: entry.seq - 1,
                }
            } else {
                Finding::Forked { seq: entry.seq }
            }
        } else {
            not_genuine(key, &entries, i, &expected_prev)
        };
        finding = Some(found);
        named = Some(entry.clone());
        break;
    }
    Verdict {
        chain: chain.to_owned(),
        entries: entries.len(),
        authentic: valid.iter().filter(|v| **v).count(),
        last: entries.last().cloned(),
        finding,
        named,
    }
}

/// What an entry whose MAC does not verify where it stands is: written elsewhere, edited in
/// place, slipped in, or (nothing after it tells) not authentic.
fn not_genuine(key: &AuditKey, entries: &[Entry], i: usize, expected_prev: &[u8]) -> Finding {
    let entry = &entries[i];
    let last_seq = entries.last().map_or(0, |e| e.seq);
    let limit = last_seq.max(entries.len() as i64) + 1;
    let written_as = (1..=limit)
        .filter(|&s| s != entry.seq)
        .find(|&s| verifies(key, entry, s));
    let next = entries.get(i + 1);
    if let Some(written_as) = written_as {
        Finding::Reordered {
            seq: entry.seq,
            written_as,
        }
    } else if entries[i + 1..].iter().any(|l| l.prev_mac == entry.mac) {
        // Its MAC is the one the chain goes on from: the MAC is genuine, the content not.
        Finding::Edited { seq: entry.seq }
    } else if next.is_some_and(|n| n.prev_mac == expected_prev) {
        Finding::Inserted { seq: entry.seq }
    } else {
        Finding::NotAuthentic { seq: entry.seq }
    }
}
