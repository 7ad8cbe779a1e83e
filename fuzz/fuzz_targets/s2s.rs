//! A signed service-to-service request (`shared::s2s::Verifier::verify`: the headers, the
//! canonical string `METHOD|PATH|TIMESTAMP|NONCE|sha256(body)`, the HMAC, the nonce cache).
//!
//! Input: `METHOD PATH\n`, `name: value` header lines, an empty line, the body (see
//! `ekklesia_fuzz::s2s_request_text`). Each input gets a fresh verifier (no nonce store) at the
//! fixed clock.
//!
//! Properties: never panics; a request that verifies names its key's tenant, cannot be replayed,
//! and stops verifying when its body changes; errors never show the signature; whatever method,
//! path and body the fuzzer picks, `sign` makes headers that verify (round trip), and, for a path a
//! client can send, no other request (another cut of the same canonical string: another method,
//! path, timestamp or nonce) verifies with that signature.
#![no_main]

use ekklesia_fuzz as fx;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use shared::s2s::{sign, S2sCaller, Verifier, VerifyError, KEY_ID, NONCE, SIGNATURE, TIMESTAMP};

struct Request<'a> {
    method: Method,
    path: &'a str,
    headers: HeaderMap,
    body: &'a [u8],
}

fn parse(data: &[u8]) -> Option<Request<'_>> {
    let line_end = data.iter().position(|&b| b == b'\n')?;
    let first = std::str::from_utf8(&data[..line_end]).ok()?;
    let (method, path) = first.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut rest = &data[line_end + 1..];
    let mut headers = HeaderMap::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    Some(Request {
        method,
        path,
        headers,
        body: rest,
    })
}

fn verify(request: &Request) -> Result<S2sCaller, VerifyError> {
    verify_with(&Verifier::new(fx::s2s_keyring()), request)
}

fn verify_with(verifier: &Verifier, request: &Request) -> Result<S2sCaller, VerifyError> {
    fx::ready(verifier.verify(
        &request.method,
        request.path,
        &request.headers,
        request.body,
        fx::NOW,
    ))
}

/// What the server takes as a path: origin form (or `*`), a valid URI path and query.
fn servable(path: &str) -> bool {
    (path.starts_with('/') || path == "*") && path.parse::<http::uri::PathAndQuery>().is_ok()
}

/// Every other request the canonical string of `signed` can be cut into, verified with its
/// signature: none may pass.
fn check_unambiguous(signed: &Request) {
    let header = |name| {
        signed.headers[name]
            .to_str()
            .expect("signed headers are ASCII")
    };
    let (key_id, timestamp, nonce, signature) = (
        header(KEY_ID),
        header(TIMESTAMP),
        header(NONCE),
        header(SIGNATURE),
    );
    let canonical = fx::s2s_canonical(
        signed.method.as_str(),
        signed.path,
        timestamp,
        nonce,
        signed.body,
    );
    // The body's digest is the last 64 characters, after the last `|`.
    let head = &canonical[..canonical.len() - 65];
    let bars: Vec<usize> = head.match_indices('|').map(|(at, _)| at).collect();
    for (kn, &k) in bars.iter().enumerate().rev() {
        let alt_nonce = &head[k + 1..];
        if alt_nonce.len() > 64 {
            break;
        }
        let Some(&j) = kn.checked_sub(1).and_then(|n| bars.get(n)) else {
            break;
        };
        let alt_timestamp = &head[j + 1..k];
        if alt_timestamp
            .parse::<i64>()
            .map_or(true, |t| fx::NOW.abs_diff(t) > 300)
        {
            continue;
        }
        for &i in bars.iter().take_while(|&&i| i < j) {
            let (alt_method, alt_path) = (&head[..i], &head[i + 1..j]);
            if (alt_method, alt_path, alt_timestamp, alt_nonce)
                == (signed.method.as_str(), signed.path, timestamp, nonce)
            {
                continue;
            }
            let Ok(method) = Method::from_bytes(alt_method.as_bytes()) else {
                continue;
            };
            if !servable(alt_path) {
                continue;
            }
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (KEY_ID, key_id),
                (TIMESTAMP, alt_timestamp),
                (NONCE, alt_nonce),
                (SIGNATURE, signature),
            ] {
                let Ok(value) = HeaderValue::from_str(value) else {
                    continue;
                };
                headers.insert(name, value);
            }
            let other = Request {
                method,
                path: alt_path,
                headers,
                body: signed.body,
            };
            assert!(
                verify(&other).is_err(),
                "a signature for {} {} (nonce {nonce}) also verifies {} {} (timestamp {alt_timestamp}, nonce {alt_nonce})",
                signed.method,
                signed.path,
                other.method,
                other.path
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = parse(data) else {
        return;
    };

    let verifier = Verifier::new(fx::s2s_keyring());
    match verify_with(&verifier, &request) {
        Ok(caller) => {
            let key = fx::S2S_SECRETS
                .iter()
                .find(|(id, _, _)| *id == caller.key_id)
                .expect("verified with a key of the ring");
            assert_eq!(caller.tenant.as_str(), key.1, "another tenant's key");
            assert_eq!(
                verify_with(&verifier, &request),
                Err(VerifyError::Replayed),
                "a replay passed"
            );
            let mut body = request.body.to_vec();
            body.push(b'x');
            let altered = Request {
                method: request.method.clone(),
                path: request.path,
                headers: request.headers.clone(),
                body: &body,
            };
            assert_eq!(verify(&altered), Err(VerifyError::BadSignature));
        }
        Err(error) => {
            assert_ne!(
                error,
                VerifyError::Unavailable,
                "no nonce store to be unavailable"
            );
            // From a real signature's length (43) up: shorter values are what the fuzzer
            // copies out of the messages themselves.
            let text = error.to_string();
            if let Some(signature) = request.headers.get(SIGNATURE) {
                let signature = String::from_utf8_lossy(signature.as_bytes());
                assert!(
                    signature.len() < 43 || !text.contains(&*signature),
                    "{text}"
                );
            }
        }
    }

    // Round trip: what `sign` makes for this method, path and body verifies, for it alone.
    let key = &fx::s2s_keys()[0];
    let mut headers = HeaderMap::new();
    for (name, value) in sign(key, &request.method, request.path, request.body, fx::NOW) {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("signed headers are ASCII"),
        );
    }
    let signed = Request {
        method: request.method.clone(),
        path: request.path,
        headers,
        body: request.body,
    };
    let caller = verify(&signed).expect("a freshly signed request verifies");
    assert_eq!(caller.tenant.as_str(), fx::TENANT);
    assert_eq!(caller.key_id, key.id);
    // Only paths a client can send (origin form): `sign` is never given another, and for one
    // that does not start with `/` a method holding `|` can swallow its head.
    if servable(request.path) {
        check_unambiguous(&signed);
    }
});
