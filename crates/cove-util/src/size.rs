//! Byte sizes as people write them: `256M`, `1.5G`, `4096B`.
//!
//! One meaning everywhere (command line and spec files): units are binary (`K` = `KiB` = 1024
//! bytes, `M` = 1024 K, `G`, `T`), case does not matter, `KB`/`KiB` mean the same as `K`. A
//! number without a unit is refused: "4096" once meant 4 GiB of memory on the command line and
//! 4 KiB in an image spec, so it must be written `4096M` or `4096B`.

use std::fmt;
use std::str::FromStr;

/// A size in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Why a text is not a size. Each message shows the text and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` has no unit; write e.g. {0}M (MiB), {0}G (GiB) or {0}B (bytes)")]
    NoUnit(String),
    #[error("`{0}` is not a size; write a number and a unit, e.g. 256M, 1.5G or 4096B")]
    Malformed(String),
    #[error("`{text}` has an unknown unit `{unit}`; use B, K, M, G or T (binary: 1K = 1024B)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("`{0}` is not a whole number of bytes")]
    NotWholeBytes(String),
    #[error("`{text}` is not a whole number of MiB; write it in M, e.g. {mib}M")]
    NotWholeMib { text: String, mib: u64 },
}

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn from_mib(mib: u64) -> Self {
        Self(mib.saturating_mul(MIB))
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in whole MiB, or an error naming `self` when it is not one (memory sizes).
    pub fn whole_mib(self) -> Result<u64, SizeError> {
        if self.0 % MIB == 0 {
            Ok(self.0 / MIB)
        } else {
            Err(SizeError::NotWholeMib {
                text: self.to_string(),
                mib: self.0.div_ceil(MIB),
            })
        }
    }

    /// Parses a size; see the module documentation for the one accepted form.
    ///
    /// ```
    /// use cove_util::ByteSize;
    /// assert_eq!(ByteSize::parse("1.5G").unwrap().bytes(), 1536 << 20);
    /// assert!(ByteSize::parse("4096").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, SizeError> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        if number.is_empty() || number.matches('.').count() > 1 || number.ends_with('.') {
            return Err(SizeError::Malformed(text.to_owned()));
        }
        let mult = match unit.to_ascii_lowercase().as_str() {
            "" => return Err(SizeError::NoUnit(t.to_owned())),
            "b" => 1,
            "k" | "kb" | "kib" => KIB,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => GIB,
            "t" | "tb" | "tib" => TIB,
            _ => {
                return Err(SizeError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let too_large = || SizeError::TooLarge(text.to_owned());
        if whole.len() > 20 || frac.len() > 18 {
            return Err(too_large());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| too_large())?
        };
        let frac_bytes = frac * u128::from(mult);
        if frac_bytes % scale != 0 {
            return Err(SizeError::NotWholeBytes(text.to_owned()));
        }
        let bytes = whole
            .checked_mul(u128::from(mult))
            .and_then(|b| b.checked_add(frac_bytes / scale))
            .filter(|b| *b <= u128::from(u64::MAX))
            .ok_or_else(too_large)?;
        Ok(Self(bytes as u64))
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        Self::parse(s)
    }
}

/// The largest unit that writes the size exactly: `256M`, `1G`, `1536M`, `4097B`; parses back
/// to the same value.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if b != 0 && b % m == 0 {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<u64, SizeError> {
        ByteSize::parse(s).map(ByteSize::bytes)
    }

    #[test]
    fn units_are_binary_and_case_free() {
        assert_eq!(p("256M"), Ok(256 * MIB));
        assert_eq!(p("256m"), Ok(256 * MIB));
        assert_eq!(p("2GiB"), Ok(2 * GIB));
        assert_eq!(p("2 GB"), Ok(2 * GIB));
        assert_eq!(p("1.5G"), Ok(1536 * MIB));
        assert_eq!(p("4096B"), Ok(4096));
        assert_eq!(p("64k"), Ok(64 * KIB));
        assert_eq!(p("1T"), Ok(TIB));
        assert_eq!(p("0M"), Ok(0));
    }

    #[test]
    fn a_bare_number_is_refused_and_the_error_shows_how_to_write_it() {
        // Regression: "4096" meant 4 GiB on the command line and 4 KiB in an image spec.
        let e = p("4096").unwrap_err();
        assert_eq!(e, SizeError::NoUnit("4096".into()));
        assert!(e.to_string().contains("4096M") && e.to_string().contains("4096B"));
    }

    #[test]
    fn malformed_sizes_say_why() {
        assert!(matches!(p("lots"), Err(SizeError::Malformed(_))));
        assert!(matches!(p("-1G"), Err(SizeError::Malformed(_))));
        assert!(matches!(p("1.2.3G"), Err(SizeError::Malformed(_))));
        assert!(matches!(p("5X"), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!(p("0.3B"), Err(SizeError::NotWholeBytes(_))));
        assert!(matches!(p("99999999999T"), Err(SizeError::TooLarge(_))));
        assert!(matches!(
            p("184467440737095516160B"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn display_round_trips_and_mib_must_be_whole() {
        for b in [
            0,
            1,
            4097,
            64 * KIB,
            256 * MIB,
            1536 * MIB,
            3 * GIB,
            2 * TIB,
        ] {
            let s = ByteSize::from_bytes(b);
            assert_eq!(ByteSize::parse(&s.to_string()), Ok(s), "{s}");
        }
        assert_eq!(ByteSize::from_mib(512).whole_mib(), Ok(512));
        let e = ByteSize::parse("1000K").unwrap().whole_mib().unwrap_err();
        assert!(e.to_string().contains("1M"), "{e}");
    }
}
