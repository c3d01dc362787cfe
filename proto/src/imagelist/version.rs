//! The `hv:version` comparator and the producer's version bump.
//!
//! [`compare`] reproduces vmcatcher's `split_numeric_sort` exactly, including
//! its quirks, because a site must reach the same accept/reject decision as
//! the reference subscriber:
//!
//! 1. Split on `-`, `,`, `.` and `/`, keeping each delimiter as a token.
//! 2. Walk the shared tokens left to right, skipping tokens equal as strings.
//!    Two all-digit tokens decide by integer value, and if the values are
//!    equal (`01` against `1`) the whole comparison ends as *equal* without
//!    looking further. A digit token beats a non-digit token. Two non-digit
//!    tokens are split into digit and non-digit runs and compared the same
//!    way, with byte-wise string order for non-digit runs.
//! 3. When every shared token is equal, more tokens is greater.
//!
//! Integers are compared by value at any length, so `2^64` and beyond work.

use std::cmp::Ordering;

/// Compares two `hv:version` strings as vmcatcher does.
pub fn compare(a: &str, b: &str) -> Ordering {
    compare_tokens(&split(a, Split::Delimiters), &split(b, Split::Delimiters), |x, y| {
        compare_tokens(&split(x, Split::DigitRuns), &split(y, Split::DigitRuns), |p, q| p.as_bytes().cmp(q.as_bytes()))
    })
}

/// The next version after `v`: the last run of digits incremented by one
/// (`0.0.1` → `0.0.2`, `1.9` → `1.10`), or `.1` appended when `v` has no
/// digits, or `0.0.1` for an empty version. The result always compares
/// greater than `v`.
pub fn bump(v: &str) -> String {
    if v.is_empty() {
        return "0.0.1".to_owned();
    }
    let bytes = v.as_bytes();
    let Some(end) = bytes.iter().rposition(u8::is_ascii_digit).map(|i| i + 1) else {
        return format!("{v}.1");
    };
    let start = bytes[..end].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    format!("{}{}{}", &v[..start], increment_decimal(&v[start..end]), &v[end..])
}

fn increment_decimal(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    for d in out.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
    let mut carried = String::with_capacity(out.len() + 1);
    carried.push('1');
    carried.push_str(&String::from_utf8_lossy(&out));
    carried
}

fn compare_tokens(a: &[&str], b: &[&str], non_numeric: impl Fn(&str, &str) -> Ordering) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        match (is_number(x), is_number(y)) {
            // vmcatcher returns here even when the values are equal.
            (true, true) => return compare_integers(x, y),
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) => match non_numeric(x, y) {
                Ordering::Equal => continue,
                decided => return decided,
            },
        }
    }
    a.len().cmp(&b.len())
}

fn compare_integers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// How [`split`] cuts a string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Each of `-,./` is a token of its own (Python's `re.finditer('[-,./]')`).
    Delimiters,
    /// Maximal runs of ASCII digits are tokens (`re.finditer('[0-9]+')`).
    DigitRuns,
}

impl Split {
    fn matches(self, c: char) -> bool {
        match self {
            Self::Delimiters => matches!(c, '-' | ',' | '.' | '/'),
            Self::DigitRuns => c.is_ascii_digit(),
        }
    }
}

/// Splits `s` into the matched tokens and the text between them, in order.
fn split(s: &str, how: Split) -> Vec<&str> {
    let class = |c| how.matches(c);
    let single = how == Split::Delimiters;
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !class(c) {
            continue;
        }
        if start < i {
            tokens.push(&s[start..i]);
        }
        let mut end = i + c.len_utf8();
        if !single {
            while let Some(&(j, d)) = chars.peek() {
                if !class(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
        }
        tokens.push(&s[i..end]);
        start = end;
    }
    if start < s.len() {
        tokens.push(&s[start..]);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering::{Equal, Greater, Less};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reference_examples() {
        assert_eq!(compare("1.0", "1.0.1"), Less);
        assert_eq!(compare("2", "10"), Less);
        assert_eq!(compare("20150618211400", "20150619000000"), Less);
        assert_eq!(compare("0.0.2", "0.0.1"), Greater);
        assert_eq!(compare("1", "1"), Equal);
    }

    #[test]
    fn digits_beat_words_and_words_compare_by_runs() {
        assert_eq!(compare("1.1", "1.a"), Greater);
        assert_eq!(compare("1.rc2", "1.rc10"), Less);
        assert_eq!(compare("1.beta", "1.alpha"), Greater);
        assert_eq!(compare("2.7.2-1-2", "2.7.2-1-10"), Less);
        // A delimiter is a token too: '-' < '.' byte-wise.
        assert_eq!(compare("1-1", "1.1"), Less);
    }

    #[test]
    fn equal_values_end_the_comparison_as_vmcatcher_does() {
        // "01" and "1" are different strings with equal values: vmcatcher
        // stops there and reports equality, even though later tokens differ.
        assert_eq!(compare("01.5", "1.3"), Equal);
        assert_eq!(compare("a01b5", "a1b3"), Equal);
    }

    #[test]
    fn integers_of_any_length() {
        assert_eq!(compare("9223372036854775808", "9223372036854775807"), Greater);
        assert_eq!(compare("100000000000000000000000", "99999999999999999999999"), Greater);
    }

    #[test]
    fn bump_increments_the_last_number() {
        assert_eq!(bump(""), "0.0.1");
        assert_eq!(bump("0.0.1"), "0.0.2");
        assert_eq!(bump("1.9"), "1.10");
        assert_eq!(bump("99"), "100");
        assert_eq!(bump("2.7.2-1-2"), "2.7.2-1-3");
        assert_eq!(bump("1.0rc"), "1.1rc");
        assert_eq!(bump("stable"), "stable.1");
    }

    proptest! {
        #[test]
        fn bump_always_moves_forward(v in "[0-9a-z.,/-]{0,12}") {
            prop_assert_eq!(compare(&bump(&v), &v), Greater);
        }

        #[test]
        fn compare_is_antisymmetric(a in "[0-9a-c.-]{0,8}", b in "[0-9a-c.-]{0,8}") {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }
    }
}
