//! `Range` header values against files of many sizes: never a panic, and a
//! satisfiable range always lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teledrop_links::range::{RangeRequest, evaluate};

fuzz_target!(|header: &[u8]| {
    for total in [0, 1, 2, 99, 100, 101, 4096, u64::MAX - 1, u64::MAX] {
        if let RangeRequest::Partial(r) = evaluate(header, total) {
            assert!(r.first <= r.last && r.last < total, "{r:?} of {total}");
            assert_eq!(r.len(), r.last - r.first + 1);
            let half_open = r.to_range();
            assert_eq!(half_open.end - half_open.start, r.len());
            let _ = r.content_range(total);
        }
    }
});
