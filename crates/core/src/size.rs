//! Byte sizes as operators write them (`5Gi`, `20MB`, `1048576`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn from_bytes(n: u64) -> Self {
        Self(n)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid byte size {input:?}: expected a number with an optional unit (K, M, G, T, Ki, Mi, Gi, Ti, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
)]
pub struct InvalidByteSize {
    pub input: String,
}

impl FromStr for ByteSize {
    type Err = InvalidByteSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidByteSize { input: s.to_owned() };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" | "k" | "kB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            "T" | "TB" => 1_000_000_000_000,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "Ti" | "TiB" => 1 << 40,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    /// Human form for replies: `1.5 MiB`, `512 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1024.0 && i < UNITS.len() - 1 {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[i])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("5Gi".parse::<ByteSize>().unwrap().bytes(), 5 << 30);
        assert_eq!("20MB".parse::<ByteSize>().unwrap().bytes(), 20_000_000);
        assert_eq!("1048576".parse::<ByteSize>().unwrap().bytes(), 1 << 20);
        assert_eq!(" 3 Mi ".parse::<ByteSize>().unwrap().bytes(), 3 << 20);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Gi", "-1", "1.5G", "5 parsecs", "99999999999999999999Ti"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_human() {
        assert_eq!(ByteSize::from_bytes(512).to_string(), "512 B");
        assert_eq!(ByteSize::from_bytes(5 << 20).to_string(), "5.0 MiB");
        assert_eq!(ByteSize::from_bytes(1536).to_string(), "1.5 KiB");
    }
}
