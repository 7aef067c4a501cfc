//! Property tests of the parsers of outside input in `teledrop-core`: link
//! tokens (the path of every download), object keys, byte sizes and file
//! names from Telegram. Arbitrary input must never panic; what is accepted
//! keeps its invariants and round-trips.
//!
//! A bounded run (see `config`) is part of `cargo test`; set
//! `PROPTEST_CASES` for a longer one. The coverage-guided targets of the
//! same parsers are in `fuzz/` (`scripts/fuzz.sh`).

use proptest::prelude::*;
use std::str::FromStr;
use teledrop_core::file::sanitize_file_name;
use teledrop_core::{ByteSize, FileId, LinkToken, ObjectKey};

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// Text that looks like a UUID: 36 characters of hex digits and hyphens in
/// any case, sometimes with a stray character.
fn uuidish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "[0-9a-fA-F-]{30,40}",
        "[0-9a-f]{32}",
        "\\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\}?",
        "urn:uuid:[0-9a-f-]{36}",
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn link_token_accepts_only_canonical_v4(s in uuidish()) {
        if let Ok(t) = LinkToken::from_str(&s) {
            prop_assert_eq!(t.to_string(), s.clone());
            prop_assert_eq!(t.as_uuid().get_version_num(), 4);
        }
        // serde goes through the same parser.
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(
            serde_json::from_str::<LinkToken>(&json).is_ok(),
            LinkToken::from_str(&s).is_ok()
        );
    }

    #[test]
    fn link_token_round_trips(bytes in any::<[u8; 16]>()) {
        let u = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let t = LinkToken::from_uuid(u).unwrap();
        let text = t.to_string();
        prop_assert_eq!(LinkToken::from_str(&text).unwrap(), t);
        // The same token in upper case or without hyphens is not a link.
        prop_assert!(LinkToken::from_str(&text.to_ascii_uppercase()).is_err() || text == text.to_ascii_uppercase());
        prop_assert!(LinkToken::from_str(&u.simple().to_string()).is_err());
        // Other versions are never tokens.
        let v7 = uuid::Builder::from_unix_timestamp_millis(1, &[0; 10]).into_uuid();
        prop_assert!(LinkToken::from_uuid(v7).is_err());
    }

    #[test]
    fn file_ids_parse_without_panicking(s in uuidish()) {
        if let Ok(id) = FileId::from_str(&s) {
            prop_assert_eq!(FileId::from_str(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn object_keys_keep_their_invariants(s in prop_oneof![
        "[a-zA-Z0-9._/-]{0,40}",
        "(\\.{1,3}|[a-z]{1,4})(/(\\.{1,3}|[a-z]{1,4})){0,4}",
        ".{0,600}",
    ]) {
        if let Ok(k) = ObjectKey::from_str(&s) {
            prop_assert_eq!(k.as_str(), s.as_str());
            prop_assert!(!s.is_empty() && s.len() <= 512);
            for seg in s.split('/') {
                prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "segment {:?}", seg);
                prop_assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)));
            }
        }
    }

    #[test]
    fn byte_sizes_never_panic(s in ".{0,30}") {
        let _ = ByteSize::from_str(&s);
    }

    #[test]
    fn byte_sizes_multiply_exactly(
        n in prop_oneof![0u64..10_000, any::<u64>()],
        unit in prop::sample::select(vec![
            ("", 1u64), ("B", 1), ("k", 1_000), ("K", 1_000), ("kB", 1_000), ("KB", 1_000),
            ("M", 1_000_000), ("MB", 1_000_000), ("G", 1_000_000_000), ("GB", 1_000_000_000),
            ("T", 1_000_000_000_000), ("TB", 1_000_000_000_000),
            ("Ki", 1 << 10), ("KiB", 1 << 10), ("Mi", 1 << 20), ("MiB", 1 << 20),
            ("Gi", 1 << 30), ("GiB", 1 << 30), ("Ti", 1 << 40), ("TiB", 1 << 40),
        ]),
        space in prop::bool::ANY,
    ) {
        let text = format!("{n}{}{}", if space { " " } else { "" }, unit.0);
        match n.checked_mul(unit.1) {
            Some(bytes) => prop_assert_eq!(ByteSize::from_str(&text).unwrap().bytes(), bytes),
            None => prop_assert!(ByteSize::from_str(&text).is_err()),
        }
    }

    #[test]
    fn file_names_are_made_safe(raw in prop_oneof![
        ".{0,300}",
        "[ .\t/\\\\\u{202E}\u{2066}\u{200F}a-c\u{0}-\u{1f}]{0,20}",
        "[. ]{0,6}[a-zé😀]{0,4}",
    ]) {
        let name = sanitize_file_name(&raw, "fallback");
        if name != "fallback" {
            prop_assert!(name.len() <= 200);
            prop_assert!(!name.is_empty());
            prop_assert!(!name.starts_with('.'), "{:?} -> {:?}", raw, name);
            prop_assert_eq!(name.trim(), name.as_str());
            for c in name.chars() {
                prop_assert!(!matches!(c, '/' | '\\' | '\0') && !c.is_control(), "{:?}", c);
                let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
                prop_assert!(!bidi, "{:?}", c);
            }
            // A safe name stays as it is.
            prop_assert_eq!(sanitize_file_name(&name, "fallback"), name);
        }
    }
}

/// Found by `file_names_are_made_safe`: trimming spaces, then dots, then
/// spaces again left a leading dot (a hidden file) behind `". .bashrc"`.
#[test]
fn no_leading_dot_behind_dots_and_spaces() {
    assert_eq!(sanitize_file_name(". .bashrc", "f"), "bashrc");
    assert_eq!(sanitize_file_name(" . . .x", "f"), "x");
    assert_eq!(sanitize_file_name(". . ", "f"), "f");
}
