//! The validated values a policy is written with: durations (`30d`),
//! quantities (`5Gi`) and MIME type patterns (`video/*`). Each parses with
//! `FromStr`, serialises back to the text it was written as, and carries
//! a JSON schema pattern so the API server rejects what the parser would.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use teledrop_core::ByteSize;

/// Why a value in a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
}

fn invalid(what: &'static str, input: &str, reason: &'static str) -> InvalidValue {
    InvalidValue {
        what,
        input: input.to_owned(),
        reason,
    }
}

macro_rules! string_serde {
    ($ty:ty, $name:literal, $pattern:expr, $description:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

// ---------------------------------------------------------------- duration

/// A span of time written as number-unit pairs: `90s`, `15m`, `12h`,
/// `30d`, `2w`, `1h30m`. At least one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyDuration(Duration);

const DURATION_PATTERN: &str = "^([0-9]+(s|m|h|d|w))+$";

impl PolicyDuration {
    pub fn from_secs(secs: u64) -> Result<Self, InvalidValue> {
        format!("{secs}s").parse()
    }
    pub fn as_duration(self) -> Duration {
        self.0
    }
    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl FromStr for PolicyDuration {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| invalid("duration", s, reason);
        if s.is_empty() {
            return Err(bad("empty; write e.g. 30d, 12h, 1h30m"));
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad("expected a number followed by s, m, h, d or w"));
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad("number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("missing unit (s, m, h, d or w)"))?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(bad("unknown unit; use s, m, h, d or w")),
            };
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| bad("too long"))?;
            rest = &rest[digits + unit.len_utf8()..];
        }
        // chrono's Duration holds ±292 million years; stay far inside it.
        if total == 0 {
            return Err(bad("must be at least 1s"));
        }
        if total > 100 * 366 * 86_400 {
            return Err(bad("longer than 100 years"));
        }
        Ok(Self(Duration::from_secs(total)))
    }
}

impl fmt::Display for PolicyDuration {
    /// The shortest exact form: `30d`, `1h30m`, `90061s` → `1d1h1m1s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        for (unit, size) in [('w', 604_800), ('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

string_serde!(
    PolicyDuration,
    "Duration",
    DURATION_PATTERN,
    "A duration: number-unit pairs with units s, m, h, d, w (e.g. 30d, 12h, 1h30m)."
);

// ---------------------------------------------------------------- quantity

/// A number of bytes written as a Kubernetes-style quantity: `500M`,
/// `5Gi`, `1024`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    bytes: u64,
}

const QUANTITY_PATTERN: &str = "^[0-9]+(B|k|K|kB|KB|M|MB|G|GB|T|TB|Ki|KiB|Mi|MiB|Gi|GiB|Ti|TiB)?$";

impl Quantity {
    pub fn bytes(self) -> u64 {
        self.bytes
    }
}

impl From<u64> for Quantity {
    fn from(bytes: u64) -> Self {
        Self { bytes }
    }
}

impl FromStr for Quantity {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // ByteSize is lenient about spaces; the schema is not.
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(invalid(
                "quantity",
                s,
                "write a number with an optional unit, e.g. 500M, 5Gi",
            ));
        }
        let size: ByteSize = s
            .parse()
            .map_err(|_| invalid("quantity", s, "write a number with an optional unit, e.g. 500M, 5Gi"))?;
        if size.bytes() > i64::MAX as u64 {
            return Err(invalid("quantity", s, "too large"));
        }
        Ok(Self { bytes: size.bytes() })
    }
}

impl fmt::Display for Quantity {
    /// The largest binary unit that divides exactly: `5Gi`, `1536Ki`, `1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if self.bytes >= size && self.bytes.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.bytes / size);
            }
        }
        write!(f, "{}", self.bytes)
    }
}

string_serde!(
    Quantity,
    "Quantity",
    QUANTITY_PATTERN,
    "A size in bytes with an optional unit: k/M/G/T (powers of 1000) or Ki/Mi/Gi/Ti (powers of 1024), e.g. 5Gi."
);

// ---------------------------------------------------------------- MIME

/// A MIME type pattern: `type/subtype`, `type/*`, or `*/*`. Matching is
/// case-insensitive; stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MimePattern(String);

const MIME_PATTERN: &str = r"^(\*/\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*))$";

impl MimePattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a file of MIME type `mime` matches.
    pub fn matches(&self, mime: &str) -> bool {
        let mime = mime.to_ascii_lowercase();
        match self.0.split_once('/') {
            Some(("*", "*")) => true,
            Some((ty, "*")) => mime.split_once('/').is_some_and(|(t, _)| t == ty),
            _ => mime == self.0,
        }
    }
}

impl FromStr for MimePattern {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| invalid("MIME type pattern", s, reason);
        let token = |t: &str| {
            let mut chars = t.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && chars.all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
        };
        let (ty, sub) = s
            .split_once('/')
            .ok_or_else(|| bad("expected type/subtype, type/* or */*"))?;
        let ok = (ty == "*" && sub == "*") || (token(ty) && (sub == "*" || token(sub)));
        if !ok {
            return Err(bad("expected type/subtype, type/* or */*"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for MimePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(
    MimePattern,
    "MimePattern",
    MIME_PATTERN,
    "A MIME type pattern: type/subtype, type/* or */* (case-insensitive)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs, shown) in [
            ("2s", 2, "2s"),
            ("90s", 90, "1m30s"),
            ("30d", 30 * 86_400, "4w2d"),
            ("1h30m", 5_400, "1h30m"),
            ("2w", 1_209_600, "2w"),
            ("1d1h1m1s", 90_061, "1d1h1m1s"),
        ] {
            let d: PolicyDuration = text.parse().unwrap();
            assert_eq!(d.as_duration().as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<PolicyDuration>().unwrap(), d);
        }
        for bad in [
            "",
            "0s",
            "5",
            "d",
            "5x",
            "1.5h",
            "-1s",
            " 5s",
            "5 s",
            "5S",
            "99999999999999999999s",
            "200000w",
        ] {
            assert!(bad.parse::<PolicyDuration>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantities() {
        for (text, bytes, shown) in [
            ("5Gi", 5 << 30, "5Gi"),
            ("500M", 500_000_000, "500000000"),
            ("1024", 1024, "1Ki"),
            ("0", 0, "0"),
            ("3KiB", 3072, "3Ki"),
        ] {
            let q: Quantity = text.parse().unwrap();
            assert_eq!(q.bytes(), bytes, "{text}");
            assert_eq!(q.to_string(), shown);
            assert_eq!(shown.parse::<Quantity>().unwrap(), q);
        }
        for bad in ["", "5 Gi", "5gi", "Gi", "-1", "1.5Gi", "99999999999Ti"] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mime_patterns() {
        let p = |s: &str| s.parse::<MimePattern>().unwrap();
        assert!(p("video/*").matches("video/mp4"));
        assert!(p("Video/*").matches("VIDEO/MP4"));
        assert!(!p("video/*").matches("audio/mp4"));
        assert!(!p("video/*").matches("videos"));
        assert!(p("*/*").matches("anything/at-all"));
        assert!(p("application/pdf").matches("Application/PDF"));
        assert!(!p("application/pdf").matches("application/pdfx"));
        for bad in [
            "",
            "*",
            "video",
            "*/mp4",
            "video/mp4/x",
            "vi deo/*",
            "video/m*",
            "/",
            "a/",
        ] {
            assert!(bad.parse::<MimePattern>().is_err(), "{bad:?}");
        }
    }
}
