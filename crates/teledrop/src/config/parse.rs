//! Value parsers: clap turns each setting into its type once, at start,
//! and an error names the variable (every argument's value name is its
//! environment variable).

use std::time::Duration;
use teledrop_core::{ByteSize, UserId};
use url::Url;

/// A humantime duration (`3s`, `500ms`, `2m`).
pub fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("{e} (examples: 3s, 500ms, 2m)"))
}

/// A humantime duration above zero.
pub fn positive_duration(raw: &str) -> Result<Duration, String> {
    match duration(raw)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// An `http://` or `https://` URL with a host and no query or fragment: a
/// base that paths are appended to.
pub fn http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url)
}

/// A file size (`2000MiB`, `500M`) from one byte up to what Telegram
/// delivers to a bot at most.
pub fn max_file_size(raw: &str) -> Result<ByteSize, String> {
    let size: ByteSize = raw.parse().map_err(|e| format!("{e}"))?;
    if size > teledrop_core::MAX_FILE_SIZE || size.bytes() == 0 {
        return Err("must be between 1 byte and 2000MiB".into());
    }
    Ok(size)
}

/// Telegram user ids, comma-separated; empty: nobody is singled out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserIds(pub Vec<UserId>);

pub fn user_ids(raw: &str) -> Result<UserIds, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().map(UserId))
        .collect::<Result<Vec<_>, _>>()
        .map(UserIds)
        .map_err(|_| "expected comma-separated numeric user ids".into())
}

/// Files per minute; empty or 0: no limit.
pub fn files_per_minute(raw: &str) -> Result<u32, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse()
        .map_err(|_| format!("{raw:?} is not a whole number of files per minute (0: no limit)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_positive_ones_refuse_zero() {
        assert_eq!(duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(duration("soon").unwrap_err().contains("examples"));
        assert_eq!(duration("0s").unwrap(), Duration::ZERO);
        assert!(positive_duration("0s").is_err());
    }

    #[test]
    fn base_urls_are_http_with_a_host_and_nothing_after_the_path() {
        assert!(http_url("https://links.example.com/base").is_ok());
        for bad in ["ftp://x", "https://", "https://x/?a=1", "https://x/#f", "x"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_sizes_stay_within_what_telegram_delivers() {
        assert_eq!(max_file_size("2000MiB").unwrap(), teledrop_core::MAX_FILE_SIZE);
        assert_eq!(max_file_size("1").unwrap().bytes(), 1);
        for bad in ["0", "2001MiB", "big"] {
            assert!(max_file_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_lists_are_comma_separated_ids() {
        assert_eq!(user_ids("").unwrap(), UserIds(Vec::new()));
        assert_eq!(user_ids(" 1, 22 ,").unwrap(), UserIds(vec![UserId(1), UserId(22)]));
        assert!(user_ids("1,alice").is_err());
    }

    #[test]
    fn rate_limits_are_whole_files_per_minute() {
        assert_eq!(files_per_minute("").unwrap(), 0);
        assert_eq!(files_per_minute(" 20 ").unwrap(), 20);
        for bad in ["-1", "ten", "1.5", "99999999999"] {
            assert!(files_per_minute(bad).is_err(), "{bad}");
        }
    }
}
