//! The national id (kennitala) from a login or the registry file
//! (`members_fn::national_id::NationalId::parse`).
//!
//! Properties: never panics; a parsed id is ten digits with a valid date, check digit and
//! century; both of its spellings (with and without the dash) parse to the same id; its Debug
//! output hides all but the last two digits; an error shows no digits of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use members_fn::national_id::{check_digit, NationalId};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match NationalId::parse(raw) {
        Ok(id) => {
            let digits = id.as_str();
            assert_eq!(digits.len(), 10);
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits:?}");
            let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
            assert!((1..=31).contains(&(d[0] * 10 + d[1])), "a day");
            assert!((1..=12).contains(&(d[2] * 10 + d[3])), "a month");
            assert_eq!(check_digit(&d[..8]), Some(d[8]));
            assert!(matches!(d[9], 8 | 9 | 0));
            assert_eq!(NationalId::parse(digits).as_ref(), Ok(&id));
            let dashed = format!("{}-{}", &digits[..6], &digits[6..]);
            assert_eq!(NationalId::parse(&dashed).as_ref(), Ok(&id));
            let shown = format!("{id:?}");
            assert!(!shown.contains(&digits[..8]), "Debug shows the id: {shown}");
            assert!(shown.ends_with(&format!("{})", &digits[8..])));
        }
        // No three digits in a row: no piece of anybody's id. (The fixed messages hold "10"
        // and "8, 9 or 0"; looking for the input itself in them finds only inputs the fuzzer
        // copied out of the messages.)
        Err(error) => {
            let text = error.to_string();
            assert!(
                !text
                    .as_bytes()
                    .windows(3)
                    .any(|w| w.iter().all(u8::is_ascii_digit)),
                "the error shows digits: {text}"
            );
        }
    }
});
