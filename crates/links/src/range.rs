//! The `Range` request header (RFC 9110 §14), single byte ranges only.
//!
//! A link server answers one range with 206. A header that asks for
//! several ranges, uses another unit or does not parse is ignored and the
//! whole file is sent (RFC 9110 §14.2 lets a server ignore `Range`); a
//! well-formed range that starts past the end is answered with 416.

use std::ops::Range;

/// A satisfiable byte range of a representation, inclusive bounds as HTTP
/// writes them (`bytes=first-last`). Never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes in the range (at least 1).
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The half-open range object storage takes.
    pub fn to_range(self) -> Range<u64> {
        self.first..self.last + 1
    }

    /// The `Content-Range` value of a 206 answer.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.first, self.last)
    }
}

/// The `Content-Range` value of a 416 answer.
pub fn unsatisfied_content_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// What a `Range` header asks of a representation of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything with 200.
    Full,
    /// One satisfiable range: 206.
    Partial(ByteRange),
    /// A well-formed range that selects nothing: 416.
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a representation of `total`
/// bytes.
pub fn evaluate(header: &[u8], total: u64) -> RangeRequest {
    match parse(header) {
        Some(spec) => spec.resolve(total),
        None => RangeRequest::Full,
    }
}

/// One syntactically valid `range-spec`. Positions that overflow `u64`
/// are saturated: such a first position is past any end, such a last
/// position or suffix covers everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    FromTo { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

impl Spec {
    fn resolve(self, total: u64) -> RangeRequest {
        match self {
            Spec::FromTo { first, last } => {
                if first >= total {
                    return RangeRequest::Unsatisfiable;
                }
                let last = last.map_or(total - 1, |l| l.min(total - 1));
                RangeRequest::Partial(ByteRange { first, last })
            }
            Spec::Suffix(length) => {
                if length == 0 || total == 0 {
                    return RangeRequest::Unsatisfiable;
                }
                RangeRequest::Partial(ByteRange {
                    first: total.saturating_sub(length),
                    last: total - 1,
                })
            }
        }
    }
}

/// Parses `bytes=<one range-spec>`; `None` for anything to ignore
/// (another unit, several ranges, bad syntax, `last < first`).
fn parse(header: &[u8]) -> Option<Spec> {
    let header = std::str::from_utf8(header).ok()?;
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    // `1#range-spec`: empty list elements are allowed and mean nothing.
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first, last) {
        ("", "") => None,
        ("", suffix) => Some(Spec::Suffix(position(suffix)?)),
        (first, "") => Some(Spec::FromTo {
            first: position(first)?,
            last: None,
        }),
        (first, last) => {
            let (first, last) = (position(first)?, position(last)?);
            (last >= first).then_some(Spec::FromTo {
                first,
                last: Some(last),
            })
        }
    }
}

/// `1*DIGIT`, saturating at `u64::MAX`.
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn r(first: u64, last: u64) -> RangeRequest {
        Partial(ByteRange { first, last })
    }

    fn eval(h: &str, total: u64) -> RangeRequest {
        evaluate(h.as_bytes(), total)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(eval("bytes=0-0", 100), r(0, 0));
        assert_eq!(eval("bytes=0-99", 100), r(0, 99));
        assert_eq!(eval("bytes=10-19", 100), r(10, 19));
        assert_eq!(eval("bytes=99-99", 100), r(99, 99));
        assert_eq!(eval("bytes=50-", 100), r(50, 99));
        assert_eq!(eval("bytes=0-", 100), r(0, 99));
        assert_eq!(eval("bytes=-1", 100), r(99, 99));
        assert_eq!(eval("bytes=-10", 100), r(90, 99));
    }

    #[test]
    fn clamping_past_the_end() {
        assert_eq!(eval("bytes=90-1000", 100), r(90, 99));
        assert_eq!(eval("bytes=-1000", 100), r(0, 99));
        assert_eq!(eval("bytes=0-99999999999999999999999", 100), r(0, 99));
        assert_eq!(eval("bytes=-99999999999999999999999", 100), r(0, 99));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(eval("bytes=100-", 100), Unsatisfiable);
        assert_eq!(eval("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(eval("bytes=-0", 100), Unsatisfiable);
        assert_eq!(eval("bytes=0-", 0), Unsatisfiable);
        assert_eq!(eval("bytes=-5", 0), Unsatisfiable);
        assert_eq!(eval("bytes=99999999999999999999999-", 100), Unsatisfiable);
    }

    #[test]
    fn ignored_headers_mean_full() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-a",
            "bytes=5-4",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=0x10-20",
            "bytes=0-1,5-6",
            "bytes=0-1, -5",
            "items=0-1",
            "bytes 0-1",
            "bytes=--1",
            "bytes=1-2-3",
        ] {
            assert_eq!(eval(h, 100), Full, "{h:?}");
        }
        assert_eq!(evaluate(b"bytes=\xff-1", 100), Full);
    }

    #[test]
    fn tolerated_spellings() {
        assert_eq!(eval("Bytes=1-2", 100), r(1, 2));
        assert_eq!(eval(" bytes=1-2 ", 100), r(1, 2));
        assert_eq!(eval("bytes=1-2,", 100), r(1, 2));
        assert_eq!(eval("bytes=, 1-2", 100), r(1, 2));
    }

    #[test]
    fn content_range_values() {
        let b = ByteRange { first: 10, last: 19 };
        assert_eq!(b.len(), 10);
        assert_eq!(b.to_range(), 10..20);
        assert_eq!(b.content_range(100), "bytes 10-19/100");
        assert_eq!(unsatisfied_content_range(100), "bytes */100");
    }
}
