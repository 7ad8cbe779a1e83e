//! The Icelandic national id (kennitala): ten digits `DDMMYY-RRCK`, where `C` is a mod-11
//! check digit over the first eight and `K` the century (9 = 1900s, 0 = 2000s, 8 = 1800s).
//! Companies' ids add 40 to the day; members are people, so those are refused.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NationalId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("a national id has 10 digits (a dash after the sixth is allowed)")]
    Format,
    #[error("the national id does not start with a valid date")]
    Date,
    #[error("the national id belongs to a company, not a person")]
    Company,
    #[error("the national id's check digit is wrong")]
    Checksum,
    #[error("the national id's last digit is not a century (8, 9 or 0)")]
    Century,
}

const WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// The check digit for the first eight digits, or `None` when no digit fits (remainder 1).
pub fn check_digit(first_eight: &[u32]) -> Option<u32> {
    let sum: u32 = first_eight.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    match (11 - sum % 11) % 11 {
        10 => None,
        c => Some(c),
    }
}

impl NationalId {
    pub fn parse(raw: &str) -> Result<Self, NationalIdError> {
        let raw = raw.trim();
        let compact: String = match raw.len() {
            10 => raw.to_owned(),
            11 if raw.as_bytes()[6] == b'-' => format!("{}{}", &raw[..6], &raw[7..]),
            _ => return Err(NationalIdError::Format),
        };
        if !compact.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NationalIdError::Format);
        }
        let d: Vec<u32> = compact.bytes().map(|b| u32::from(b - b'0')).collect();
        let day = d[0] * 10 + d[1];
        let month = d[2] * 10 + d[3];
        if (41..=71).contains(&day) {
            return Err(NationalIdError::Company);
        }
        if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
            return Err(NationalIdError::Date);
        }
        if check_digit(&d[..8]) != Some(d[8]) {
            return Err(NationalIdError::Checksum);
        }
        if !matches!(d[9], 8 | 9 | 0) {
            return Err(NationalIdError::Century);
        }
        Ok(Self(compact))
    }

    /// The ten digits, no dash: how the registry stores it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid, made-up person's kennitala for `n` (distinct `n` below 33,600, distinct ids), for
/// tests and demo data. Born 1950–1999 with serials from 20 up.
pub fn synthetic(n: u32) -> NationalId {
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let year = 50 + (n / 336) % 50;
    let mut serial = 20 + (n / 16_800) % 2 * 40;
    loop {
        let head = format!("{day:02}{month:02}{year:02}{serial:02}");
        let digits: Vec<u32> = head.bytes().map(|b| u32::from(b - b'0')).collect();
        if let Some(check) = check_digit(&digits) {
            return NationalId(format!("{head}{check}9"));
        }
        // Remainder 1 has no check digit; the next serial has one.
        serial += 1;
    }
}

/// Personal data: debug output shows only the last two digits.
impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NationalId(********{})", &self.0[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_people_in_both_spellings() {
        assert_eq!(
            NationalId::parse("0101302989").unwrap().as_str(),
            "0101302989"
        );
        assert_eq!(
            NationalId::parse("010130-2989").unwrap().as_str(),
            "0101302989"
        );
        assert_eq!(
            NationalId::parse(" 1201603389 ").unwrap().as_str(),
            "1201603389"
        );
    }

    #[test]
    fn refuses_what_is_not_a_persons_kennitala() {
        use NationalIdError::*;
        for (raw, why) in [
            ("0101302979", Checksum),
            ("0101302999", Checksum),
            ("010130298", Format),
            ("01013029890", Format),
            ("01013-2989", Format),
            ("01O1302989", Format),
            ("3201302989", Date),
            ("0113302989", Date),
            ("0001302989", Date),
            ("4101302989", Company),
            ("0101302981", Century),
        ] {
            assert_eq!(NationalId::parse(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn synthetic_ids_are_valid_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..33_600).map(synthetic).collect();
        assert_eq!(ids.len(), 33_600);
        for id in ids {
            assert_eq!(NationalId::parse(id.as_str()).as_ref(), Ok(&id));
        }
    }

    #[test]
    fn debug_hides_the_id() {
        let id = NationalId::parse("0101302989").unwrap();
        assert_eq!(format!("{id:?}"), "NationalId(********89)");
    }
}
