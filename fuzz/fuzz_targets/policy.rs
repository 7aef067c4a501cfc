//! Retention policy values (durations, quantities, MIME patterns) and
//! whole policy files: never a panic; what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::str::FromStr;
use teledrop_retention::file::parse_policy_documents;
use teledrop_retention::values::{MimePattern, PolicyDuration, Quantity};

fuzz_target!(|s: &str| {
    if let Ok(d) = PolicyDuration::from_str(s) {
        assert_eq!(PolicyDuration::from_str(&d.to_string()).unwrap(), d);
        assert!(d.as_duration().as_secs() >= 1);
        let _ = d.as_chrono();
    }
    if let Ok(q) = Quantity::from_str(s) {
        assert_eq!(Quantity::from_str(&q.to_string()).unwrap(), q);
    }
    if let Ok(m) = MimePattern::from_str(s) {
        assert_eq!(MimePattern::from_str(m.as_str()).unwrap(), m);
        assert!(m.matches(&s.replace('*', "x")));
    }
    let _ = parse_policy_documents("fuzz", s);
});
