//! Writes the seed corpora, `fuzz/corpus/<target>/`, from the fixtures the targets use:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Valid inputs (tokens, vote messages, S2S requests, receipts signed or encrypted with the fixed
//! keys, CSV files like members-fn's tests) and a few refused ones next to each. Vote messages,
//! sealed ballots and S2S requests carry a random nonce, so regenerating changes those files.

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::Duration;
use ekklesia_fuzz as fx;
use http::Method;
use members_fn::national_id::synthetic;
use shared::domain::TokenHash;
use shared::receipt::{submission_digest, Receipt};
use shared::token::Claims;
use shared::vote::VoteMessage;

struct Corpus {
    dir: std::path::PathBuf,
}

impl Corpus {
    fn new(target: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the corpus folder");
        Self { dir }
    }

    fn put(&self, name: &str, data: impl AsRef<[u8]>) {
        fs::write(self.dir.join(name), data).expect("write a seed");
    }

    /// With the mode byte of targets that have two (`0` the input as received, `1` the other).
    fn put_mode(&self, name: &str, mode: u8, data: impl AsRef<[u8]>) {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(data.as_ref());
        self.put(name, bytes);
    }
}

fn claims(exp_hours: i64) -> Claims {
    Claims {
        ten: fx::tenant(),
        elc: fx::election(),
        jti: B64.encode([7u8; 32]),
        nbf: fx::NOW - 60,
        exp: fx::NOW + exp_hours * 3600,
    }
}

fn tokens() {
    let c = Corpus::new("token");
    let signer = fx::token_signer();
    let now = fx::now();
    let (valid, _) =
        signer.issue_with_id(fx::election(), &[9u8; 32], now, now + Duration::hours(12));
    c.put_mode("valid", b'0', &valid);
    c.put_mode(
        "valid-other-tenant",
        b'0',
        fx::other_token_signer().sign_claims(&Claims {
            ten: fx::other_tenant(),
            ..claims(1)
        }),
    );
    c.put_mode("expired", b'0', signer.sign_claims(&claims(-1)));
    c.put_mode(
        "wrong-tenant",
        b'0',
        fx::other_token_signer().sign_claims(&claims(1)),
    );
    c.put_mode(
        "short-id",
        b'0',
        signer.sign_claims(&Claims {
            jti: B64.encode([1u8; 8]),
            ..claims(1)
        }),
    );
    let (other_election, _) = signer.issue(uuid::Uuid::from_u128(5), now, now + Duration::hours(1));
    c.put_mode("other-election", b'0', other_election);
    let parts: Vec<&str> = valid.split('.').collect();
    c.put_mode(
        "tampered",
        b'0',
        format!("{}.{}.{}", parts[0], B64.encode(b"{}"), parts[2]),
    );
    c.put_mode("two-parts", b'0', format!("{}.{}", parts[0], parts[1]));
    // Honestly signed header and claims (mode 1).
    let header = r#"{"alg":"EdDSA","typ":"vote+jwt","kid":"fuzz-a"}"#;
    let claims_json = serde_json::to_string(&claims(1)).expect("claims serialise");
    c.put_mode("signed-valid", b'1', format!("{header}\n{claims_json}"));
    c.put_mode(
        "signed-alg-none",
        b'1',
        format!(
            r#"{{"alg":"none","typ":"vote+jwt","kid":"fuzz-a"}}{}{claims_json}"#,
            '\n'
        ),
    );
    c.put_mode(
        "signed-far-future",
        b'1',
        format!(
            "{header}\n{}",
            serde_json::json!({"ten": fx::TENANT, "elc": fx::election(), "jti": B64.encode([3u8; 32]), "nbf": 0, "exp": i64::MAX})
        ),
    );
    c.put_mode(
        "signed-extra-fields",
        b'1',
        format!(
            "{header}\n{}",
            serde_json::json!({"ten": fx::TENANT, "elc": fx::election(), "jti": B64.encode([3u8; 32]), "nbf": fx::NOW, "exp": fx::NOW + 10, "role": "admin"})
        ),
    );
}

fn ballots() {
    let c = Corpus::new("ballot");
    for (name, body) in [
        ("yes", r#"{"choices":["yes"]}"#.to_string()),
        ("two", r#"{"choices":["a,b","{x}"]}"#.to_string()),
        (
            "ranked",
            r#"{"choices":["NULL"," ","中文","🗳","Jón Jónsson"]}"#.to_string(),
        ),
        (
            "escapes",
            r#"{"choices":["say \"no\"","back\\slash","\u00f3"]}"#.to_string(),
        ),
        ("duplicate", r#"{"choices":["yes","yes"]}"#.to_string()),
        ("unknown", r#"{"choices":["maybe"]}"#.to_string()),
        ("empty", r#"{"choices":[]}"#.to_string()),
        (
            "extra-field",
            r#"{"choices":["yes"],"token":"x"}"#.to_string(),
        ),
        ("long", format!(r#"{{"choices":["{}"]}}"#, "x".repeat(300))),
        (
            "longest-id",
            format!(r#"{{"choices":["{}"]}}"#, fx::OPTION_IDS[11]),
        ),
    ] {
        c.put(name, body);
    }
}

fn vote_message(choices: &[&str]) -> VoteMessage {
    VoteMessage {
        tenant: fx::tenant(),
        election_id: fx::election(),
        token_hash: TokenHash::of_token_id(&[9u8; 32]),
        receipt: Receipt::from_trusted(
            fx::receipt_key()
                .derive(fx::election(), &[9u8; 32], &submission_digest(&[], None))
                .to_string(),
        ),
        choices: choices.iter().map(|c| (*c).to_owned()).collect(),
        accepted_at: fx::now(),
    }
}

fn vote_messages() {
    let c = Corpus::new("vote_message");
    let keys = fx::vote_keys();
    let vote = vote_message(&["yes"]);
    c.put_mode("valid", b'0', vote.encode(keys, "seed").data);
    c.put_mode(
        "valid-odd-choices",
        b'0',
        vote_message(fx::OPTION_IDS).encode(keys, "seed").data,
    );
    c.put_mode(
        "retired-key",
        b'0',
        vote.encode(&fx::retired_vote_keys(), "seed").data,
    );
    let mut v3: serde_json::Value =
        serde_json::from_slice(&vote.encode(keys, "seed").data).expect("JSON");
    v3["v"] = 3.into();
    c.put_mode("version-3", b'0', serde_json::to_vec(&v3).expect("JSON"));
    c.put_mode(
        "version-1",
        b'0',
        r#"{"v":1,"tenant":"party-a","choices":["yes"]}"#,
    );
    let stranger =
        shared::vote_keys::VoteKeys::from_config(&format!("fuzz-1:{}", B64.encode([0x99; 32])))
            .expect("a key");
    c.put_mode("forged", b'0', vote.encode(&stranger, "seed").data);
    c.put_mode("not-json", b'0', "{not json");
    // Payloads the real key encrypts (mode 1).
    let payload = serde_json::to_vec(&vote).expect("JSON");
    c.put_mode("payload-valid", b'1', &payload);
    let mut bad: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
    bad["choices"] = "yes".into();
    c.put_mode(
        "payload-choices-not-a-list",
        b'1',
        serde_json::to_vec(&bad).expect("JSON"),
    );
    let mut bad: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
    bad["token_hash"] = "not hex".into();
    c.put_mode(
        "payload-bad-token-hash",
        b'1',
        serde_json::to_vec(&bad).expect("JSON"),
    );
    c.put_mode("payload-not-json", b'1', "choices: yes");
}

fn sealed_ballots() {
    let c = Corpus::new("sealed_ballot");
    let keys = fx::vote_keys();
    let choices = |c: &[&str]| c.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    c.put_mode(
        "yes",
        0,
        keys.encrypt_ballot(&fx::tenant(), fx::election(), &choices(&["yes"])),
    );
    c.put_mode(
        "odd",
        0,
        keys.encrypt_ballot(&fx::tenant(), fx::election(), &choices(fx::OPTION_IDS)),
    );
    c.put_mode(
        "retired-key",
        0,
        fx::retired_vote_keys().encrypt_ballot(&fx::tenant(), fx::election(), &choices(&["no"])),
    );
    c.put_mode(
        "other-tenant",
        0,
        keys.encrypt_ballot(&fx::other_tenant(), fx::election(), &choices(&["no"])),
    );
    c.put_mode("short", 0, [1u8, 6]);
    c.put_mode(
        "choices",
        1,
        serde_json::to_vec(fx::OPTION_IDS).expect("JSON"),
    );
    c.put_mode("no-choices", 1, "[]");
}

fn s2s_requests() {
    let c = Corpus::new("s2s");
    let keys = fx::s2s_keys();
    let election_path = format!("/internal/v1/elections/{}", fx::election());
    let definition = serde_json::to_vec(&fx::definitions()[0]).expect("JSON");
    let tokens_path = format!("{election_path}/tokens");
    let results_path = format!("{election_path}/results");
    let tokens = format!(
        r#"{{"token_hashes":["{}"]}}"#,
        TokenHash::of_token_id(&[9u8; 32]).to_hex()
    )
    .into_bytes();
    for (name, key, method, path, body, extra) in [
        (
            "put-definition",
            &keys[0],
            Method::PUT,
            election_path.as_str(),
            definition.clone(),
            None,
        ),
        (
            "post-tokens",
            &keys[1],
            Method::POST,
            tokens_path.as_str(),
            tokens,
            Some(("x-idempotency-key", "open-1".to_string())),
        ),
        (
            "get",
            &keys[0],
            Method::GET,
            results_path.as_str(),
            Vec::new(),
            None,
        ),
    ] {
        let mut headers: Vec<(&str, String)> =
            shared::s2s::sign(key, &method, path, &body, fx::NOW);
        headers.extend(extra);
        c.put(
            name,
            fx::s2s_request_text(method.as_str(), path, &headers, &body),
        );
    }
    // A path whose canonical string has more `|` than the format's own.
    let bars = format!("/a|{}|q", fx::NOW);
    let headers = shared::s2s::sign(&keys[0], &Method::PUT, &bars, b"", fx::NOW);
    c.put(
        "path-with-bars",
        fx::s2s_request_text("PUT", &bars, &headers, b""),
    );
    let headers = shared::s2s::sign(&keys[0], &Method::PUT, &election_path, &definition, fx::NOW);
    let with = |name: &str, value: String| -> Vec<(&str, String)> {
        headers
            .iter()
            .map(|(n, v)| (*n, if *n == name { value.clone() } else { v.clone() }))
            .collect()
    };
    for (name, headers) in [
        (
            "skewed",
            with(shared::s2s::TIMESTAMP, (fx::NOW - 3600).to_string()),
        ),
        ("unknown-key", with(shared::s2s::KEY_ID, "k9".into())),
        ("short-nonce", with(shared::s2s::NONCE, "abc".into())),
        (
            "bad-signature",
            with(shared::s2s::SIGNATURE, B64.encode([0u8; 32])),
        ),
        (
            "signed-timestamp-plus",
            with(shared::s2s::TIMESTAMP, format!("+{}", fx::NOW)),
        ),
        (
            "timestamp-min",
            with(shared::s2s::TIMESTAMP, i64::MIN.to_string()),
        ),
        ("no-headers", Vec::new()),
    ] {
        c.put(
            name,
            fx::s2s_request_text("PUT", &election_path, &headers, &definition),
        );
    }
}

fn national_ids() {
    let c = Corpus::new("national_id");
    for n in [0, 1, 500, 20_000] {
        c.put(&format!("synthetic-{n}"), synthetic(n).as_str());
    }
    for (name, raw) in [
        ("dashed", "010130-2989"),
        ("spaces", " 1201603389 "),
        ("bad-checksum", "0101302979"),
        ("company", "4101302989"),
        ("bad-date", "3201302989"),
        ("century", "0101302981"),
        ("letter", "01O1302989"),
        ("multibyte", "0101ó-2989"),
    ] {
        c.put(name, raw);
    }
}

fn registry_files() {
    let c = Corpus::new("registry_csv");
    let k = |n: u32| synthetic(n).as_str().to_owned();
    c.put(
        "three",
        format!(
            "kennitala,name,roles\n{},Anna Jónsdóttir,\n{},\"Björn, the chair\",admin\n{},Cecilía,member;ops\n",
            k(1),
            k(2),
            k(3)
        ),
    );
    c.put(
        "dashed-and-spaces",
        format!(
            "national_id,name,roles\n{}-{}, Anna ,\n{},Davíð,admin ops\n",
            &k(2)[..6],
            &k(2)[6..],
            k(4)
        ),
    );
    c.put(
        "bad-lines",
        format!(
            "national_id,name,roles\n{},ok,\n0101302979,bad check digit,\n{},dup,\n{},dup,\n{},x,chair\n4101302989,company,\n",
            k(1),
            k(2),
            k(2),
            k(3)
        ),
    );
    c.put("no-id-column", "name,roles\nAnna,admin\n");
    c.put("header-only", "national_id,name\n");
    c.put("short-row", format!("national_id,name\n{}\n", k(5)));
    c.put("id-only", format!("kennitala\n{}\n{}\n", k(6), k(7)));
    c.put(
        "quoted",
        format!(
            "\"national_id\",\"nafn\",\"roles\"\n\"{}\",\"A \"\"B\"\"\",\"ops|admin\"\n",
            k(8)
        ),
    );
}

fn receipts() {
    let c = Corpus::new("receipt");
    let key = fx::receipt_key();
    let receipt = key.derive(
        fx::election(),
        &[9u8; 32],
        &submission_digest(&["yes".into()], None),
    );
    c.put_mode("valid", b'0', receipt.as_str());
    let mut forged = receipt.as_str().to_owned();
    let last = forged.pop().expect("a receipt");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    c.put_mode("forged", b'0', forged);
    c.put_mode("short", b'0', "r1.short");
    c.put_mode("no-prefix", b'0', &receipt.as_str()[3..]);
    let mut derive = vec![b'1'];
    derive.extend_from_slice(fx::election().as_bytes());
    derive.extend_from_slice(&[9u8; 32]);
    derive.extend_from_slice("yes,no\nidem-1".as_bytes());
    c.put("derive", derive);
}

fn main() {
    tokens();
    ballots();
    vote_messages();
    sealed_ballots();
    s2s_requests();
    national_ids();
    registry_files();
    receipts();
    println!("seeds written to {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
