//! `worker::batch::text_array_literal` against PostgreSQL's own array parser, property style:
//! generated ballots of option ids full of what an array literal must quote (quotes, braces,
//! backslashes, commas, spaces, `NULL`, non-ASCII; never NUL or a control character, which
//! option ids refuse) are written as literals and cast the way the seal reads them
//! (`b::text[]` over `unnest`, `elections.finish_seal`); each must come back exactly as it was.
//! One fixed seed, so a failure reproduces, and one random seed per run, printed on failure.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::TestDb;
use worker::batch::text_array_literal;

const FIXED_SEED: u64 = 0x5eed_f022;
/// Ballots per seed; each run checks this many twice over (fixed and random seed).
const BALLOTS: usize = 3_000;
const MAX_CHOICES: usize = 8;
/// `shared::domain::MAX_OPTION_ID_LEN`, in characters here, so multi-byte ids get longer.
const MAX_ID_CHARS: usize = 64;

/// Pieces an option id is made of, the awkward ones over-represented.
const PIECES: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    ",",
    " ",
    "  ",
    "'",
    "NULL",
    "null",
    "a",
    "Z",
    "0",
    "yes",
    "é",
    "ð",
    "Þ",
    "中",
    "🗳",
    "\u{00A0}",
    "\u{200B}",
    "\u{202E}",
    "e\u{0301}",
    "\\\"",
    "{\"",
    "\"}",
    "=",
    ";",
    "(",
    ")",
    "[",
    "]",
    "$",
    "%",
];

fn option_id(rng: &mut StdRng) -> String {
    // Now and then the bare words PostgreSQL treats specially when unquoted.
    match rng.gen_range(0..20) {
        0 => return "NULL".into(),
        1 => return " ".into(),
        2 => return String::new(),
        _ => {}
    }
    let mut id = String::new();
    let pieces = rng.gen_range(1..=24);
    for _ in 0..pieces {
        let piece = PIECES[rng.gen_range(0..PIECES.len())];
        if id.chars().count() + piece.chars().count() > MAX_ID_CHARS {
            break;
        }
        id.push_str(piece);
    }
    id
}

fn ballots(seed: u64) -> Vec<Vec<String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..BALLOTS)
        .map(|_| {
            let n = rng.gen_range(0..=MAX_CHOICES);
            (0..n).map(|_| option_id(&mut rng)).collect()
        })
        .collect()
}

/// What PostgreSQL parses each ballot's literal into, in order.
async fn parsed(db: &TestDb, literals: &[String]) -> Vec<Vec<Option<String>>> {
    sqlx::query_scalar(
        "SELECT b::text[] FROM unnest($1::text[]) WITH ORDINALITY AS u(b, n) ORDER BY n",
    )
    .bind(literals)
    .fetch_all(&db.owner)
    .await
    .expect("PostgreSQL parses every literal")
}

async fn check(db: &TestDb, seed: u64) {
    let ballots = ballots(seed);
    assert!(
        ballots
            .iter()
            .flatten()
            .all(|id| !id.chars().any(char::is_control)),
        "the generator made a control character"
    );
    let literals: Vec<String> = ballots.iter().map(|b| text_array_literal(b)).collect();
    let back = parsed(db, &literals).await;
    assert_eq!(back.len(), ballots.len());
    for ((ballot, literal), back) in ballots.iter().zip(&literals).zip(back) {
        let expected: Vec<Option<String>> = ballot.iter().cloned().map(Some).collect();
        assert_eq!(
            back, expected,
            "seed {seed:#x}: {literal} parsed into something else"
        );
    }
}

#[tokio::test]
async fn every_generated_ballot_survives_postgresqls_array_parser() {
    let db = TestDb::create().await;
    check(&db, FIXED_SEED).await;
    check(&db, rand::random()).await;

    // The single-parameter form too, for the awkward ids one by one.
    for id in PIECES.iter().chain(&["NULL", "", " ", "{}", "\"\""]) {
        let choices = vec![(*id).to_owned(), format!("{id}{id}")];
        let back: Vec<Option<String>> = sqlx::query_scalar("SELECT $1::text::text[]")
            .bind(text_array_literal(&choices))
            .fetch_one(&db.owner)
            .await
            .expect("PostgreSQL parses the literal");
        assert_eq!(back, choices.into_iter().map(Some).collect::<Vec<_>>());
    }
}
