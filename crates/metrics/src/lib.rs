//! The roles' Prometheus metrics: counters, gauges and labelled counters
//! kept in atomics, rendered in the text exposition format on `/metrics`.
//!
//! Every role has a handful of fixed metrics whose label values come from
//! small closed sets (outcomes, stable error labels, status codes), so a
//! registry, histograms or a client library would only add weight. Each
//! metric carries its name and help; a role groups its metrics in a struct
//! that implements [`Render`], and the `/metrics` handler answers
//! [`render`] of them with [`CONTENT_TYPE`].
//!
//! Names follow Prometheus conventions: a `teledrop_` prefix, counters end
//! in `_total`, base units (bytes, not KiB).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that writes metric families in the text format.
pub trait Render: Send + Sync {
    fn render(&self, out: &mut String);
}

/// The text of every source, in order.
pub fn render(sources: &[&dyn Render]) -> String {
    let mut out = String::new();
    for source in sources {
        source.render(&mut out);
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// HELP text may hold anything but a raw backslash or line break.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values are quoted: backslash, quote and line break are escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A monotonic count.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Render for Counter {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    pub fn add(&self, n: i64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, n: i64) {
        self.value.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Adds one until the guard is dropped, so an early return or a
    /// cancelled future cannot leave the gauge counting something gone.
    pub fn track(&self) -> GaugeGuard<'_> {
        self.add(1);
        GaugeGuard(self)
    }
}

impl Render for Gauge {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// See [`Gauge::track`].
#[must_use = "the gauge goes down again when the guard is dropped"]
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// A counter per combination of label values.
///
/// Series appear when first counted; [`CounterVec::with_series`] lists the
/// expected ones up front so they are exported as 0 before anything
/// happens (a rate over a series that appears late misses its first
/// increment).
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Exports these series (one label value per label) from the start.
    pub fn with_series<'a, S: AsRef<[&'a str]>>(self, series: impl IntoIterator<Item = S>) -> Self {
        for values in series {
            self.add(values.as_ref(), 0);
        }
        self
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// `values` holds one value per label, in the order the labels were
    /// declared.
    pub fn add(&self, values: &[&str], n: u64) {
        debug_assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label values {values:?} for labels {:?}",
            self.name,
            self.labels
        );
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        match series.iter_mut().find(|(k, _)| same(k, values)) {
            Some((_, v)) => *v += n,
            None => {
                series.insert(values.iter().map(|v| (*v).to_owned()).collect(), n);
            }
        }
    }

    /// The count of one series (0 when never counted).
    pub fn get(&self, values: &[&str]) -> u64 {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|(k, v)| same(k, values).then_some(*v))
            .unwrap_or(0)
    }
}

/// A linear look-up: the label sets are a few dozen series at most, and
/// an owned key per increment would cost more.
fn same(key: &[String], values: &[&str]) -> bool {
    key.iter().map(String::as_str).eq(values.iter().copied())
}

impl Render for CounterVec {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (values, n) in series.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(values)
                .map(|(label, value)| format!("{label}=\"{}\"", escape_label(value)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {n}", self.name, labels.join(","));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let c = Counter::new("teledrop_things_total", "Things done.");
        c.add(3);
        let g = Gauge::new("teledrop_busy", "Work under way.");
        {
            let _a = g.track();
            let _b = g.track();
            assert_eq!(g.get(), 2);
        }
        g.add(1);
        assert_eq!(
            render(&[&c, &g]),
            "# HELP teledrop_things_total Things done.\n\
             # TYPE teledrop_things_total counter\n\
             teledrop_things_total 3\n\
             # HELP teledrop_busy Work under way.\n\
             # TYPE teledrop_busy gauge\n\
             teledrop_busy 1\n"
        );
    }

    #[test]
    fn labelled_series_are_sorted_preset_and_escaped() {
        let v = CounterVec::new("teledrop_jobs_total", "Jobs.", &["outcome", "error"])
            .with_series([["stored", ""], ["failed", "network"]]);
        v.inc(&["failed", "network"]);
        v.add(&["failed", "a \"b\"\\\nc"], 2);
        assert_eq!(v.get(&["failed", "network"]), 1);
        assert_eq!(v.get(&["stored", ""]), 0);
        assert_eq!(v.get(&["never", ""]), 0);
        let mut out = String::new();
        v.render(&mut out);
        assert_eq!(
            out,
            "# HELP teledrop_jobs_total Jobs.\n\
             # TYPE teledrop_jobs_total counter\n\
             teledrop_jobs_total{outcome=\"failed\",error=\"a \\\"b\\\"\\\\\\nc\"} 2\n\
             teledrop_jobs_total{outcome=\"failed\",error=\"network\"} 1\n\
             teledrop_jobs_total{outcome=\"stored\",error=\"\"} 0\n"
        );
    }

    #[test]
    fn help_cannot_break_a_line() {
        let c = Counter::new("teledrop_x_total", "one\ntwo \\ three");
        let mut out = String::new();
        c.render(&mut out);
        assert!(
            out.starts_with("# HELP teledrop_x_total one\\ntwo \\\\ three\n"),
            "{out}"
        );
    }
}
