use super::*;
use std::cell::RefCell;

#[tokio::test]
async fn bad_messages_are_isolated_and_their_batch_mates_commit() {
    let attempts = RefCell::new(Vec::new());
    let ends = commit_isolating(100, |r: Range<usize>| {
        attempts.borrow_mut().push(r.clone());
        let ok = !r.contains(&13) && !r.contains(&77);
        async move {
            if ok {
                Ok(Committed::default())
            } else {
                Err(sqlx::Error::RowNotFound)
            }
        }
    })
    .await;
    let mut poison: Vec<usize> = ends
        .iter()
        .filter(|(_, e)| matches!(e, PartEnd::Poison(_)))
        .map(|(r, _)| r.start)
        .collect();
    poison.sort();
    assert_eq!(poison, vec![13, 77]);
    let committed: usize = ends
        .iter()
        .filter(|(_, e)| matches!(e, PartEnd::Committed(_)))
        .map(|(r, _)| r.len())
        .sum();
    assert_eq!(committed, 98, "every other message committed");
    // Each bad message costs about two attempts per halving, not one per message.
    assert!(
        attempts.borrow().len() <= 4 * 7 + 1,
        "{} attempts",
        attempts.borrow().len()
    );
}

#[tokio::test]
async fn an_unavailable_database_stops_the_split_and_nacks_everything_left() {
    let ends = commit_isolating(10, |r| async move {
        if r.len() == 10 {
            Err(sqlx::Error::RowNotFound)
        } else {
            Err(sqlx::Error::PoolTimedOut)
        }
    })
    .await;
    let unavailable: usize = ends
        .iter()
        .filter(|(_, e)| matches!(e, PartEnd::Unavailable(_)))
        .map(|(r, _)| r.len())
        .sum();
    assert_eq!(unavailable, 10);
}

#[test]
fn accepted_at_is_no_earlier_than_the_publish_time_minus_the_grace() {
    let published = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
    let grace = chrono::Duration::seconds(10);
    let honest = published - chrono::Duration::seconds(2);
    assert_eq!(bounded_accepted_at(honest, published, grace), honest);
    let backdated = published - chrono::Duration::seconds(60);
    assert_eq!(
        bounded_accepted_at(backdated, published, grace),
        published - grace
    );
}
