//! Property tests of the values a RetentionPolicy is written with
//! (durations, quantities, MIME type patterns) and of the policy file
//! parser. Arbitrary and near-valid text never panics; what parses prints
//! back to itself; the parser accepts nothing the CRD's schema pattern
//! refuses, and refuses what the pattern accepts only for a range reason.
//!
//! A bounded run (see `config`) is part of `cargo test`; set
//! `PROPTEST_CASES` for a longer one. The coverage-guided targets of the
//! same parsers are in `fuzz/` (`scripts/fuzz.sh`).

use proptest::prelude::*;
use regex::Regex;
use schemars::JsonSchema;
use std::str::FromStr;
use teledrop_retention::values::{MimePattern, PolicyDuration, Quantity};
use teledrop_retention::{PolicyFileError, parse_policy_documents};

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// The `pattern` of a value type's JSON schema, as the API server checks it.
fn schema_pattern<T: JsonSchema>() -> Regex {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    let pattern = schema.get("pattern").and_then(|p| p.as_str()).expect("a pattern");
    Regex::new(pattern).unwrap()
}

const UNITS: &[&str] = &[
    "", "s", "m", "h", "d", "w", "S", "M", "x", "ms", " ", "é", "B", "k", "K", "kB", "KB", "MB", "G", "GB", "T", "TB",
    "Ki", "KiB", "Mi", "MiB", "Gi", "GiB", "Ti", "TiB", "gi", "Pi", "E",
];

/// Number-unit pairs, mostly of known units, with odd numbers.
fn pairs() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (0u64..1_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{15,25}",
        Just(String::new()),
        "[-+.0-9]{1,4}",
    ];
    let pair = (number, prop::sample::select(UNITS)).prop_map(|(n, u)| format!("{n}{u}"));
    prop::collection::vec(pair, 1..4).prop_map(|p| p.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![4 => pairs(), 1 => ".{0,20}"]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn durations(s in any_text()) {
        let pattern = schema_pattern::<PolicyDuration>();
        match PolicyDuration::from_str(&s) {
            Ok(d) => {
                prop_assert!(pattern.is_match(&s), "{:?} parses but the schema refuses it", s);
                let secs = d.as_duration().as_secs();
                prop_assert!((1..=100 * 366 * 86_400).contains(&secs));
                prop_assert_eq!(PolicyDuration::from_str(&d.to_string()).unwrap(), d);
                prop_assert_eq!(PolicyDuration::from_secs(secs).unwrap(), d);
                prop_assert_eq!(d.as_chrono().num_seconds(), secs as i64);
            }
            Err(e) => {
                prop_assert_eq!(e.input.as_str(), s.as_str());
                if pattern.is_match(&s) {
                    prop_assert!(
                        ["must be at least 1s", "longer than 100 years", "too long", "number too large"].contains(&e.reason),
                        "{:?}: {}", s, e
                    );
                }
            }
        }
    }

    #[test]
    fn durations_print_back(secs in prop_oneof![1u64..100_000, 1u64..=100 * 366 * 86_400]) {
        let d = PolicyDuration::from_secs(secs).unwrap();
        let shown = d.to_string();
        prop_assert_eq!(PolicyDuration::from_str(&shown).unwrap().as_duration().as_secs(), secs);
        // Through serde as in a policy document.
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<PolicyDuration>(&json).unwrap(), d);
    }

    #[test]
    fn quantities(s in any_text()) {
        let pattern = schema_pattern::<Quantity>();
        match Quantity::from_str(&s) {
            Ok(q) => {
                prop_assert!(pattern.is_match(&s), "{:?} parses but the schema refuses it", s);
                prop_assert!(q.bytes() <= i64::MAX as u64);
                prop_assert_eq!(Quantity::from_str(&q.to_string()).unwrap(), q);
            }
            Err(e) => {
                prop_assert_eq!(e.input.as_str(), s.as_str());
                // What the schema lets through fails only by being too
                // large (the parser says so or overflows).
                if pattern.is_match(&s) {
                    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                    let small = digits.len() <= 6;
                    prop_assert!(!small, "{:?}: {}", s, e);
                }
            }
        }
    }

    #[test]
    fn quantities_print_back(bytes in prop_oneof![0u64..1 << 45, 0u64..=i64::MAX as u64], shift in 0u32..41) {
        let bytes = bytes.checked_shl(shift).filter(|b| *b <= i64::MAX as u64).unwrap_or(bytes);
        let q = Quantity::from(bytes);
        prop_assert_eq!(Quantity::from_str(&q.to_string()).unwrap(), q);
        let json = serde_json::to_string(&q).unwrap();
        prop_assert_eq!(serde_json::from_str::<Quantity>(&json).unwrap(), q);
    }

    #[test]
    fn mime_patterns(s in prop_oneof![
        "[a-zA-Z0-9*!#$&^_.+/ -]{0,12}",
        "(\\*|[a-zA-Z]{1,6})/(\\*|[a-zA-Z0-9.+-]{0,8})",
        ".{0,16}",
    ], mime in prop_oneof!["[a-zA-Z]{1,6}/[a-zA-Z0-9.+-]{1,8}", ".{0,12}"]) {
        let pattern = schema_pattern::<MimePattern>();
        match MimePattern::from_str(&s) {
            Ok(p) => {
                prop_assert!(pattern.is_match(&s), "{:?} parses but the schema refuses it", s);
                prop_assert_eq!(p.as_str(), s.to_ascii_lowercase());
                prop_assert_eq!(MimePattern::from_str(&p.to_string()).unwrap(), p.clone());
                // A pattern matches the type it names, in any case.
                prop_assert!(p.matches(&s.replace('*', "x").to_ascii_uppercase()));
                // `type/*` matches by type; an exact pattern only itself.
                let matched = p.matches(&mime);
                let lower = mime.to_ascii_lowercase();
                let expected = match p.as_str().split_once('/') {
                    Some(("*", "*")) => true,
                    Some((ty, "*")) => lower.split_once('/').is_some_and(|(t, _)| t == ty),
                    _ => lower == p.as_str(),
                };
                prop_assert_eq!(matched, expected);
            }
            Err(_) => prop_assert!(!pattern.is_match(&s), "{:?} fits the schema but is refused", s),
        }
    }
}

// --------------------------------------------------------- policy files

/// YAML documents near a valid policy: known and unknown keys, values of
/// every kind, several documents.
fn policy_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        pairs(),
        Just("1h".to_owned()),
        Just("5Gi".to_owned()),
        Just("video/*".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{}".to_owned()),
        Just("~".to_owned()),
        Just("&a 1".to_owned()),
        Just("*a".to_owned()),
        "[a-z0-9\"'{}:,\\[\\] -]{0,12}",
    ];
    let spec_key = prop::sample::select(vec![
        "maxAge",
        "maxIdle",
        "interval",
        "dryRun",
        "onQuotaExceeded",
        "perUser",
        "total",
        "selector",
        "bogus",
    ]);
    let spec = prop::collection::vec((spec_key, value), 0..5)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("  {k}: {v}\n")).collect::<String>());
    let name = prop_oneof![Just("p".to_owned()), "[a-z0-9-]{0,70}", ".{0,8}"];
    let doc = (name, spec).prop_map(|(name, spec)| {
        format!("apiVersion: teledrop.dev/v1alpha1\nkind: RetentionPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}")
    });
    prop_oneof![
        4 => prop::collection::vec(doc, 1..3).prop_map(|d| d.join("---\n")),
        1 => ".{0,60}",
        1 => "[-:{}\\[\\]&*!|>'\"%@` \\n a-z0-9]{0,60}",
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn policy_files_never_panic(text in policy_text()) {
        match parse_policy_documents("fuzz.yaml", &text) {
            Ok(policies) => {
                for p in &policies {
                    prop_assert!(p.key.starts_with("file:"));
                    prop_assert!(p.spec.validate().is_ok());
                }
            }
            Err(PolicyFileError::Invalid { origin, index, .. }) => {
                prop_assert_eq!(origin, "fuzz.yaml");
                prop_assert!(index >= 1);
            }
            Err(PolicyFileError::Duplicate { .. }) => {}
            Err(e @ PolicyFileError::Read { .. }) => prop_assert!(false, "{}", e),
        }
    }
}

#[test]
fn a_valid_policy_file_parses() {
    let text = "apiVersion: teledrop.dev/v1alpha1\nkind: RetentionPolicy\nmetadata:\n  name: p\nspec:\n  maxAge: 30d\n  selector:\n    mimeTypes: [video/*]\n    maxSize: 5Gi\n";
    let policies = parse_policy_documents("t", text).unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].spec.max_age.unwrap().to_string(), "4w2d");
}
