//! One way to print an error with its causes, each cause once.
//!
//! Our error variants that wrap another error say what failed in their own
//! words and return the wrapped error from `source()`; they do not also
//! print it. Libraries are less regular: `object_store`, `sqlx` and `kube`
//! often print their cause in their own message *and* return it from
//! `source()`. [`Report`] walks the whole chain and leaves out a cause whose
//! text is already part of what was printed, so a log line, an admin's
//! reply or the CLI's last word shows every cause exactly once, in order:
//!
//! `storage: object store: Generic S3 error: … : invalid peer certificate: UnknownIssuer`

use std::error::Error;
use std::fmt;

/// Displays an error and its `source()` chain, joined by `": "`, leaving
/// out any cause whose text the line already holds.
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'static));

/// Shorthand for log fields: `error = %report(&e)`. For an error already
/// behind `dyn` (a boxed or `anyhow` error) use `Report(e.as_ref())`.
pub fn report<E: Error + 'static>(e: &E) -> Report<'_> {
    Report(e)
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The printed line is kept to check later causes against it; a
        // chain is a handful of short messages, so this costs nothing that
        // matters next to the failure being reported.
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !text.is_empty() && !line.contains(&text) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&text);
            }
            cause = e.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional cause, like a thiserror
    /// variant.
    #[derive(Debug)]
    struct E(String, Option<Box<dyn Error + 'static>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    fn e(msg: &str, cause: Option<E>) -> E {
        E(msg.into(), cause.map(|c| Box::new(c) as Box<dyn Error>))
    }

    #[test]
    fn every_cause_is_printed_once_in_order() {
        let leaf = e("invalid peer certificate: UnknownIssuer", None);
        // A library that prints its cause and also returns it.
        let lib = e("Generic S3 error: invalid peer certificate: UnknownIssuer", Some(leaf));
        let ours = e("object store", Some(lib));
        let top = e("storage", Some(ours));
        assert_eq!(
            report(&top).to_string(),
            "storage: object store: Generic S3 error: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn an_error_without_causes_prints_its_message() {
        assert_eq!(report(&e("not found", None)).to_string(), "not found");
    }

    #[test]
    fn empty_messages_add_no_separator() {
        let top = e("", Some(e("refused", None)));
        assert_eq!(report(&top).to_string(), "refused");
        let mid = e("connect", Some(e("", Some(e("refused", None)))));
        assert_eq!(report(&mid).to_string(), "connect: refused");
    }
}
