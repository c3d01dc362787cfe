//! Human-friendly sizes (`256MiB`, `4M`, `1G`, `1048576`) and counts
//! (`1 CRL`, `2 CRLs`).

use crate::{Error, Result};

/// Parses a byte count with an optional binary suffix (`K`, `KiB`, `M`, `MiB`,
/// `G`, `GiB`, `T`, `TiB`; case-insensitive). Decimal SI suffixes (`KB`, `MB`,
/// `GB`) mean powers of 1000.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| Error::Invalid(format!("`{s}` is not a size such as 4MiB or 1048576")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(Error::Invalid(format!("`{s}`: unknown size unit `{unit}`"))),
    };
    n.checked_mul(mult).ok_or_else(|| Error::Invalid(format!("`{s}` is too large")))
}

/// Formats a byte count with a binary unit, e.g. `1.50 GiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// `n` things, with the noun in the plural unless `n` is 1: `count(1,
/// "CRL")` is `1 CRL`, `count(0, "CRL")` is `0 CRLs`.
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(1, "CRL"), "1 CRL");
        assert_eq!(count(0, "CA certificate"), "0 CA certificates");
        assert_eq!(count(2, "failed attempt"), "2 failed attempts");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("4m").unwrap(), 4 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(format_size(1536 << 20), "1.50 GiB");
        assert_eq!(format_size(12), "12 B");
    }
}
