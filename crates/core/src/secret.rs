//! Secrets and their redaction.
//!
//! The bot token is part of every Bot API URL, so any error that carries a
//! URL can leak it. [`Redactor`] scrubs a string; [`Secret`] keeps a value
//! out of `Debug`/`Display`.

use std::fmt;
use std::str::FromStr;

/// A value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(v: T) -> Self {
        Self(v)
    }
    /// The one place a secret is read; grep for it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A Telegram bot token: `<bot id>:<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken {
    raw: String,
    bot_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bot token: expected <digits>:<30-100 characters of A-Z a-z 0-9 _ ->, as given by @BotFather")]
pub struct InvalidBotToken;

impl BotToken {
    pub fn expose(&self) -> &str {
        &self.raw
    }
    /// The numeric id before the colon; not secret.
    pub fn bot_id(&self) -> i64 {
        self.bot_id
    }
    pub fn redactor(&self) -> Redactor {
        Redactor::new([self.raw.clone()])
    }
}

impl FromStr for BotToken {
    type Err = InvalidBotToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (id, secret) = s.split_once(':').ok_or(InvalidBotToken)?;
        let bot_id: i64 = if !id.is_empty() && id.len() <= 15 && id.bytes().all(|b| b.is_ascii_digit()) {
            id.parse().map_err(|_| InvalidBotToken)?
        } else {
            return Err(InvalidBotToken);
        };
        let ok = (30..=100).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(InvalidBotToken);
        }
        Ok(Self {
            raw: s.to_owned(),
            bot_id,
        })
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotToken({}:[redacted])", self.bot_id)
    }
}

/// Replaces known secrets in text with `[redacted]`, including their
/// percent-encoded forms (a `:` becomes `%3A` in some URLs).
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.needles.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut needles = Vec::new();
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            let encoded = s.replace(':', "%3A");
            if encoded != s {
                needles.push(encoded.clone());
                needles.push(encoded.replace("%3A", "%3a"));
            }
            // The part after the colon is the real secret: catch it alone too.
            if let Some((_, tail)) = s.split_once(':')
                && tail.len() >= 8
            {
                needles.push(tail.to_owned());
            }
            needles.push(s);
        }
        // Longest first so a full token is replaced before its tail.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { needles }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), "[redacted]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A made-up token; a short bot id keeps it from looking like a real one.
    const TOKEN: &str = "1234:AAFakeTokenForTestsOnly_abcdefghij-klm";

    #[test]
    fn parses_and_hides_tokens() {
        let t: BotToken = TOKEN.parse().unwrap();
        assert_eq!(t.bot_id(), 1234);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("AAFake"), "{dbg}");
        for bad in [
            "",
            "abc",
            "123:short",
            ":AAFakeTokenForTestsOnly_abcdefghij",
            "12a:AAFakeTokenForTestsOnly_abcdefghij",
            "1:AAFakeTokenForTestsOnly_abcdefghij!",
        ] {
            assert!(bad.parse::<BotToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn redacts_plain_and_encoded_forms() {
        let r = TOKEN.parse::<BotToken>().unwrap().redactor();
        let msg = format!(
            "error sending request for url (https://api.telegram.org/bot{TOKEN}/getFile) and /file/bot{}/x",
            TOKEN.replace(':', "%3A")
        );
        let out = r.redact(&msg);
        assert!(!out.contains("AAFakeToken"), "{out}");
        assert!(out.contains("/bot[redacted]/getFile"), "{out}");
        assert_eq!(format!("{:?}", Secret::new("pw")), "[redacted]");
    }
}
