//! What can be decided about a batch without touching tokens: the pure step of the batch commit,
//! tested on its own.
//!
//! A vote is *on time* when it was accepted while its election was open: not before `opens_at`,
//! before `closes_at`, not after the close ingest was told of (`closed_at`). A sealed election
//! does not refuse an on-time vote: the vote was accepted before the close, so it counts, and the
//! election is sealed again with it (`Committed::reopened_seals`).
//!
//! Several submissions of one token in a batch: the on-time valid ones are the candidates, and
//! the one accepted first claims the token (`chosen`); a copy of it (same receipt) is a
//! duplicate, and every other candidate waits for the claim's outcome (`siblings`). A late or
//! invalid copy is rejected under its own receipt and never takes the token from a valid one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared::domain::{ElectionDefinition, ElectionStatus, RejectionReason};
use shared::vote::VoteMessage;
use uuid::Uuid;

use crate::batch::Outcome;

/// An election as the batch sees it (read `FOR KEY SHARE` in the batch's transaction).
#[derive(Debug, Clone)]
pub struct Election {
    pub definition: ElectionDefinition,
    pub closed_at: Option<DateTime<Utc>>,
    pub sealed: bool,
}

impl Election {
    /// Whether a vote accepted at `at` was accepted while voting was open.
    pub fn on_time(&self, at: DateTime<Utc>) -> bool {
        let d = &self.definition;
        d.status() != ElectionStatus::Draft
            && d.opens_at().is_none_or(|open| open <= at)
            && d.closes_at().is_none_or(|close| at < close)
            && self.closed_at.is_none_or(|closed| at <= closed)
    }
}

/// The result of triage, by index into the batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Triage {
    /// Decided without the database (rejections, copies of a chosen vote).
    pub decided: Vec<(usize, Outcome)>,
    /// One per token: the submission that claims it.
    pub chosen: Vec<usize>,
    /// Other on-time valid submissions of a chosen vote's token: `(index, chosen index)`.
    pub siblings: Vec<(usize, usize)>,
}

/// Sorts `indices` (votes of one tenant) into decided, chosen and siblings.
pub fn triage(
    votes: &[VoteMessage],
    indices: &[usize],
    elections: &HashMap<Uuid, Election>,
) -> Triage {
    let mut triage = Triage::default();
    // Per token, the chosen candidate so far (its index).
    let mut by_token: HashMap<(Uuid, [u8; 32]), usize> = HashMap::new();
    let mut candidates: Vec<usize> = Vec::new();
    for &i in indices {
        let vote = &votes[i];
        let Some(election) = elections.get(&vote.election_id) else {
            triage
                .decided
                .push((i, Outcome::Rejected(RejectionReason::ElectionClosed)));
            continue;
        };
        if !election.on_time(vote.accepted_at) {
            triage
                .decided
                .push((i, Outcome::Rejected(RejectionReason::ElectionClosed)));
            continue;
        }
        if election.definition.ballot(vote.choices.clone()).is_err() {
            triage
                .decided
                .push((i, Outcome::Rejected(RejectionReason::InvalidBallot)));
            continue;
        }
        candidates.push(i);
        let key = (vote.election_id, vote.token_hash.0);
        let first = by_token.entry(key).or_insert(i);
        let current = &votes[*first];
        // The submission accepted first claims the token (ties: the smaller receipt, so every
        // redelivery of the same batch decides the same way).
        if (vote.accepted_at, vote.receipt.as_str())
            < (current.accepted_at, current.receipt.as_str())
        {
            *first = i;
        }
    }
    for i in candidates {
        let vote = &votes[i];
        let chosen = by_token[&(vote.election_id, vote.token_hash.0)];
        if chosen == i {
            triage.chosen.push(i);
        } else if votes[chosen].receipt == vote.receipt {
            triage.decided.push((i, Outcome::Duplicate));
        } else {
            triage.siblings.push((i, chosen));
        }
    }
    triage
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{ElectionFields, ElectionKind, ElectionOption, TenantId, TokenHash};
    use shared::receipt::Receipt;

    const REJ_CLOSED: Outcome = Outcome::Rejected(RejectionReason::ElectionClosed);
    const REJ_INVALID: Outcome = Outcome::Rejected(RejectionReason::InvalidBallot);

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn election(status: ElectionStatus) -> Election {
        Election {
            definition: ElectionDefinition::new(ElectionFields {
                tenant: TenantId::parse("party-a").unwrap(),
                id: Uuid::from_u128(7),
                kind: ElectionKind::Single,
                options: ["yes", "no"]
                    .iter()
                    .map(|o| ElectionOption {
                        id: (*o).into(),
                        label: (*o).into(),
                    })
                    .collect(),
                max_choices: 1,
                status,
                opens_at: Some(t(0)),
                closes_at: Some(t(100)),
            })
            .unwrap(),
            closed_at: None,
            sealed: false,
        }
    }

    fn vote(token: u8, choice: &str, at: i64, receipt: &str) -> VoteMessage {
        VoteMessage {
            tenant: TenantId::parse("party-a").unwrap(),
            election_id: Uuid::from_u128(7),
            token_hash: TokenHash([token; 32]),
            receipt: Receipt::from_trusted(receipt.into()),
            choices: vec![choice.into()],
            accepted_at: t(at),
        }
    }

    fn run(e: Election, votes: &[VoteMessage]) -> Triage {
        let elections = HashMap::from([(e.definition.id(), e)]);
        let indices: Vec<usize> = (0..votes.len()).collect();
        let mut triage = triage(votes, &indices, &elections);
        triage.decided.sort_by_key(|(i, _)| *i);
        triage
    }

    #[allow(clippy::too_many_lines, reason = "the table of cases is the test")]
    #[test]
    fn table() {
        let open = election(ElectionStatus::Open);
        let closed_at_50 = Election {
            closed_at: Some(t(50)),
            definition: open.definition.clone().with_status(ElectionStatus::Closed),
            ..open.clone()
        };
        let sealed = Election {
            sealed: true,
            ..closed_at_50.clone()
        };
        let draft = election(ElectionStatus::Draft);
        struct Case {
            name: &'static str,
            election: Election,
            votes: Vec<VoteMessage>,
            expect: Triage,
        }
        let cases = vec![
            Case {
                name: "an on-time valid vote is chosen",
                election: open.clone(),
                votes: vec![vote(1, "yes", 10, "r-a")],
                expect: Triage {
                    chosen: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "before opens_at, at closes_at, in a draft: election closed",
                election: open.clone(),
                votes: vec![vote(1, "yes", -1, "r-a"), vote(2, "yes", 100, "r-b")],
                expect: Triage {
                    decided: vec![(0, REJ_CLOSED), (1, REJ_CLOSED)],
                    ..Default::default()
                },
            },
            Case {
                name: "a draft accepts nothing",
                election: draft,
                votes: vec![vote(1, "yes", 10, "r-a")],
                expect: Triage {
                    decided: vec![(0, REJ_CLOSED)],
                    ..Default::default()
                },
            },
            Case {
                name: "after the close ingest was told of: election closed; at it: on time",
                election: closed_at_50.clone(),
                votes: vec![vote(1, "yes", 51, "r-a"), vote(2, "yes", 50, "r-b")],
                expect: Triage {
                    decided: vec![(0, REJ_CLOSED)],
                    chosen: vec![1],
                    ..Default::default()
                },
            },
            Case {
                name: "a sealed election still takes a vote accepted before its close",
                election: sealed,
                votes: vec![vote(1, "yes", 49, "r-a"), vote(2, "yes", 60, "r-b")],
                expect: Triage {
                    decided: vec![(1, REJ_CLOSED)],
                    chosen: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "an invalid ballot is rejected",
                election: open.clone(),
                votes: vec![vote(1, "maybe", 10, "r-a")],
                expect: Triage {
                    decided: vec![(0, REJ_INVALID)],
                    ..Default::default()
                },
            },
            Case {
                name: "a redelivered copy in the same batch is a duplicate",
                election: open.clone(),
                votes: vec![vote(1, "yes", 10, "r-a"), vote(1, "yes", 10, "r-a")],
                expect: Triage {
                    decided: vec![(1, Outcome::Duplicate)],
                    chosen: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "two ballots of one token: the first accepted claims, the other waits for it",
                election: open.clone(),
                votes: vec![vote(1, "no", 20, "r-b"), vote(1, "yes", 10, "r-a")],
                expect: Triage {
                    chosen: vec![1],
                    siblings: vec![(0, 1)],
                    ..Default::default()
                },
            },
            Case {
                name: "the on-time valid copy wins over a late or invalid one ahead of it",
                election: closed_at_50,
                votes: vec![
                    vote(1, "yes", 70, "r-late"),
                    vote(1, "maybe", 20, "r-invalid"),
                    vote(1, "no", 30, "r-good"),
                ],
                expect: Triage {
                    decided: vec![(0, REJ_CLOSED), (1, REJ_INVALID)],
                    chosen: vec![2],
                    ..Default::default()
                },
            },
            Case {
                name: "a vote for an election this tenant does not have",
                election: open,
                votes: vec![VoteMessage {
                    election_id: Uuid::from_u128(8),
                    ..vote(1, "yes", 10, "r-a")
                }],
                expect: Triage {
                    decided: vec![(0, REJ_CLOSED)],
                    ..Default::default()
                },
            },
        ];
        for case in cases {
            assert_eq!(
                run(case.election, &case.votes),
                case.expect,
                "{}",
                case.name
            );
        }
    }
}
