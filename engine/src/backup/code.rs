//! The recovery code: 128 random bits that unlock one backup, shown to the user once.
//!
//! # Format
//!
//! 28 characters of Crockford base32 (`0-9 A-Z` without `I L O U`), shown as 7 groups of
//! 4 (`7K3M-QW2P-…`). Reading it back is forgiving: case does not matter, spaces and
//! dashes are ignored, and `O` reads as `0`, `I` and `L` as `1`.
//!
//! The first 26 characters carry the secret (130 bits: two zero bits, then the 128 secret
//! bits, big-endian); the last 2 are check characters of a Reed-Solomon code over GF(32)
//! (field polynomial x^5 + x^2 + 1, generator (x - a)(x - a^2) with a = 2), so the 28
//! characters form a codeword with minimum distance 3. Any one or two mistyped characters,
//! including two neighbours swapped, are always caught and reported as a typo, before the
//! slow key derivation runs, instead of as a wrong code.

use std::fmt;

use zeroize::{Zeroize as _, Zeroizing};

use super::BackupError;

/// Characters of a recovery code.
pub const CODE_CHARS: usize = 28;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const DATA_SYMBOLS: usize = 26;
const GROUP: usize = 4;
/// x^5 + x^2 + 1, a primitive polynomial for GF(32).
const FIELD_POLY: u8 = 0b10_0101;
const ALPHA: u8 = 2;

/// A backup's recovery code. `Debug` never shows it; [`RecoveryCode::reveal`] does, once,
/// for the user to write down.
pub struct RecoveryCode {
    secret: Zeroizing<[u8; 16]>,
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

impl RecoveryCode {
    /// A fresh random code.
    pub fn generate() -> Self {
        Self::from_secret(rand::random())
    }

    pub(crate) fn from_secret(secret: [u8; 16]) -> Self {
        RecoveryCode {
            secret: Zeroizing::new(secret),
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 16] {
        &self.secret
    }

    /// The code as the user should write it down: 7 groups of 4 characters joined by `-`.
    pub fn reveal(&self) -> String {
        let symbols = self.symbols();
        let mut text = String::with_capacity(CODE_CHARS + CODE_CHARS / GROUP);
        for (i, symbol) in symbols.iter().enumerate() {
            if i > 0 && i % GROUP == 0 {
                text.push('-');
            }
            text.push(char::from(ALPHABET[usize::from(*symbol)]));
        }
        text
    }

    /// Reads a code the user typed: `MalformedCode` when it cannot be a code (wrong length,
    /// a character outside the alphabet), `MistypedCode` when the check characters
    /// disagree.
    pub fn parse(text: &str) -> Result<Self, BackupError> {
        let mut symbols = Zeroizing::new([0u8; CODE_CHARS]);
        let mut count = 0;
        for c in text.chars() {
            if c.is_whitespace() || c == '-' {
                continue;
            }
            let value = symbol_value(c).ok_or(BackupError::MalformedCode(
                "it has a character that is not in recovery codes (they use 0-9 and A-Z without U)",
            ))?;
            if count < CODE_CHARS {
                symbols[count] = value;
            }
            count += 1;
        }
        if count != CODE_CHARS {
            return Err(BackupError::MalformedCode(
                "a recovery code has 28 characters (7 groups of 4)",
            ));
        }
        if syndrome(&symbols[..], ALPHA) != 0 || syndrome(&symbols[..], gf_mul(ALPHA, ALPHA)) != 0 {
            return Err(BackupError::MistypedCode);
        }
        // The two bits above the 128-bit secret are zero in every code we issue; the check
        // characters already make a single slip there impossible to miss.
        if symbols[0] >> 3 != 0 {
            return Err(BackupError::MistypedCode);
        }
        let mut acc: u128 = 0;
        for symbol in &symbols[..DATA_SYMBOLS] {
            acc = (acc << 5) | u128::from(*symbol);
        }
        let code = Self::from_secret(acc.to_be_bytes());
        acc.zeroize();
        Ok(code)
    }

    /// The 28 symbols: 26 data symbols, then the two check symbols.
    fn symbols(&self) -> Zeroizing<[u8; CODE_CHARS]> {
        let mut symbols = Zeroizing::new([0u8; CODE_CHARS]);
        let mut value = u128::from_be_bytes(*self.secret);
        for i in (0..DATA_SYMBOLS).rev() {
            symbols[i] = (value & 0x1f) as u8;
            value >>= 5;
        }
        let (r1, r0) = check_symbols(&symbols[..DATA_SYMBOLS]);
        symbols[DATA_SYMBOLS] = r1;
        symbols[DATA_SYMBOLS + 1] = r0;
        symbols
    }
}

fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    let byte = u8::try_from(c).ok()?;
    ALPHABET.iter().position(|b| *b == byte).map(|p| p as u8)
}

/// Multiplication in GF(32) modulo [`FIELD_POLY`].
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= FIELD_POLY;
        }
    }
    product
}

/// The codeword polynomial (first symbol = highest power) evaluated at `x`.
fn syndrome(symbols: &[u8], x: u8) -> u8 {
    symbols.iter().fold(0, |acc, s| gf_mul(acc, x) ^ s)
}

/// The remainder of `data(x) * x^2` divided by `g(x) = (x + a)(x + a^2)`, as the two check
/// symbols (coefficients of x^1 and x^0), which make the whole word divisible by g.
fn check_symbols(data: &[u8]) -> (u8, u8) {
    let a2 = gf_mul(ALPHA, ALPHA);
    let g1 = ALPHA ^ a2;
    let g0 = gf_mul(ALPHA, a2);
    let (mut r1, mut r0) = (0u8, 0u8);
    for symbol in data {
        let feedback = symbol ^ r1;
        r1 = r0 ^ gf_mul(feedback, g1);
        r0 = gf_mul(feedback, g0);
    }
    (r1, r0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 16] = *b"\x8f\x01\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff";

    #[test]
    fn round_trips_and_reads_forgivingly() {
        for _ in 0..200 {
            let code = RecoveryCode::generate();
            let text = code.reveal();
            assert_eq!(text.len(), 34);
            assert_eq!(text.split('-').count(), 7);
            let back = RecoveryCode::parse(&text).unwrap();
            assert_eq!(back.secret(), code.secret());
        }
        let code = RecoveryCode::from_secret(SECRET);
        let text = code.reveal();
        let sloppy = text
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(RecoveryCode::parse(&sloppy).unwrap().secret(), &SECRET);
        assert_eq!(
            RecoveryCode::parse(&format!("  {}\n", text.replace('-', "")))
                .unwrap()
                .secret(),
            &SECRET
        );
        assert_eq!(format!("{code:?}"), "RecoveryCode(<redacted>)");
    }

    #[test]
    fn every_single_and_double_slip_is_caught_as_a_typo() {
        let text: Vec<u8> = RecoveryCode::from_secret(SECRET)
            .reveal()
            .bytes()
            .filter(|b| *b != b'-')
            .collect();
        let parse = |t: &[u8]| RecoveryCode::parse(std::str::from_utf8(t).unwrap());
        for i in 0..CODE_CHARS {
            for replacement in ALPHABET.iter().filter(|c| **c != text[i]) {
                let mut typo = text.clone();
                typo[i] = *replacement;
                assert!(matches!(parse(&typo), Err(BackupError::MistypedCode)));
                // A second slip further on.
                let j = (i + 5) % CODE_CHARS;
                let mut two = typo.clone();
                two[j] = if text[j] == b'Z' { b'Y' } else { b'Z' };
                assert!(matches!(parse(&two), Err(BackupError::MistypedCode)));
            }
            if i + 1 < CODE_CHARS && text[i] != text[i + 1] {
                let mut swapped = text.clone();
                swapped.swap(i, i + 1);
                assert!(matches!(parse(&swapped), Err(BackupError::MistypedCode)));
            }
        }
    }

    #[test]
    fn wrong_lengths_and_characters_are_malformed() {
        let text = RecoveryCode::from_secret(SECRET).reveal();
        for bad in [&text[..text.len() - 1], "", "1234", &format!("{text}A")] {
            assert!(matches!(
                RecoveryCode::parse(bad),
                Err(BackupError::MalformedCode(_))
            ));
        }
        let with_u = format!("U{}", &text[1..]);
        assert!(matches!(
            RecoveryCode::parse(&with_u),
            Err(BackupError::MalformedCode(_))
        ));
        assert!(matches!(
            RecoveryCode::parse("123456"),
            Err(BackupError::MalformedCode(_))
        ));
    }
}
