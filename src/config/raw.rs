//! The raw shape of `regions.toml`: tables, keys and TOML types, with their spans.
//!
//! This module walks the spanned tree that `toml` parses and copies out every known key
//! with its type checked (string, integer, number, boolean, array of strings), keeping
//! the byte spans of keys and values for diagnostics. It reports unknown keys (with a
//! "did you mean" when one is close) and wrong types, every one of them, and carries on.
//! It gives values no meaning: ranges, durations, targets and cross-references are
//! checked by `validate` and `lab`.
//!
//! The walk is done by hand rather than with serde so that one run reports every
//! unknown key and every wrong type in a table, not only the first.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::suggest::{closest, list};

mod ops;
mod thresholds;

pub(super) use ops::{RawDiff, RawSchedule};
pub(super) use thresholds::{PAIR_LIMIT_KEYS, RawLimits, RawPair, RawThresholds};

/// A byte range in the configuration text.
pub(super) type Span = Range<usize>;

/// A value read from the file, with where its key and its value are.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct At<T> {
    pub value: T,
    /// The value's span.
    pub span: Span,
    /// The key's span (for an array element: the element's span).
    pub key: Span,
}

/// A problem at a span of the configuration text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Problem {
    pub span: Span,
    pub message: String,
}

impl Problem {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Problem {
            span,
            message: message.into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub probe: Option<RawProbe>,
    pub regions: Vec<RawRegion>,
    pub lab: Option<RawLab>,
    pub thresholds: Option<RawThresholds>,
    pub diff: Option<RawDiff>,
    pub schedule: Option<RawSchedule>,
    /// Top-level keys present but unusable, or meant by a misspelt key.
    pub broken: Vec<&'static str>,
}

/// `[probe]`.
#[derive(Debug, Default)]
pub(super) struct RawProbe {
    pub kinds: Option<At<Vec<At<String>>>>,
    pub count: Option<At<i128>>,
    pub interval: Option<At<String>>,
    pub gap: Option<At<String>>,
    pub timeout: Option<At<String>>,
    pub payload: Option<At<i128>>,
}

/// One `[[region]]`.
#[derive(Debug, Default)]
pub(super) struct RawRegion {
    /// The `[[region]]` header (or the inline table).
    pub span: Span,
    pub name: Option<At<String>>,
    pub location: Option<RawLocation>,
    pub targets: Option<At<Vec<At<String>>>>,
    pub source: Option<At<String>>,
    /// Keys present but unusable, or meant by a misspelt key: "missing" is not
    /// reported on top of that.
    pub broken: Vec<&'static str>,
}

/// `location = { lat = ..., lon = ... }`.
#[derive(Debug, Default)]
pub(super) struct RawLocation {
    pub span: Span,
    pub lat: Option<At<f64>>,
    pub lon: Option<At<f64>>,
    /// As [`RawRegion::broken`].
    pub broken: Vec<&'static str>,
}

/// `[lab]`.
#[derive(Debug, Default)]
pub(super) struct RawLab {
    pub span: Span,
    pub mode: Option<At<String>>,
    pub matrix: Option<At<String>>,
    pub loss: Option<At<String>>,
    pub jitter_ms: Option<At<f64>>,
    pub port: Option<At<i128>>,
    pub seed: Option<At<i128>>,
    pub inflation: Option<At<f64>>,
    pub base_ms: Option<At<f64>>,
    pub faults: Vec<RawFault>,
    /// As [`RawRegion::broken`].
    pub broken: Vec<&'static str>,
}

/// One `[[lab.fault]]`.
#[derive(Debug, Default)]
pub(super) struct RawFault {
    pub span: Span,
    pub source: Option<At<String>>,
    pub target: Option<At<String>>,
    pub both_directions: Option<At<bool>>,
    pub extra_ms: Option<At<f64>>,
    pub loss_pct: Option<At<f64>>,
    /// As [`RawRegion::broken`].
    pub broken: Vec<&'static str>,
}

pub(super) const TOP_KEYS: &[&str] = &["probe", "region", "lab", "thresholds", "diff", "schedule"];
pub(super) const PROBE_KEYS: &[&str] = &["kinds", "count", "interval", "gap", "timeout", "payload"];
pub(super) const REGION_KEYS: &[&str] = &["name", "location", "targets", "source"];
pub(super) const LOCATION_KEYS: &[&str] = &["lat", "lon"];
pub(super) const LAB_KEYS: &[&str] = &[
    "mode",
    "matrix",
    "loss",
    "jitter_ms",
    "port",
    "seed",
    "inflation",
    "base_ms",
    "fault",
];
pub(super) const FAULT_KEYS: &[&str] = &[
    "source",
    "target",
    "both_directions",
    "extra_ms",
    "loss_pct",
];

type Key<'i> = Spanned<Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Reads the parsed document. Every problem found is pushed to `out`.
pub(super) fn read(root: &DeTable<'_>, out: &mut Vec<Problem>) -> RawConfig {
    let mut r = Reader {
        out,
        failed: Vec::new(),
    };
    r.unknown_keys(root, TOP_KEYS, "at the top level");
    let mut raw = RawConfig::default();
    if let Some((key, value)) = root.get_key_value("probe") {
        match value.get_ref() {
            DeValue::Table(t) => raw.probe = Some(r.scoped(|r| r.probe(t)).0),
            DeValue::Array(_) => r.fail(
                "probe",
                key.span(),
                "probe must be one table; write [probe], not [[probe]]",
            ),
            other => {
                r.wrong_type(key, value, "a table", "[probe] on a line of its own", other);
                r.failed.push("probe");
            }
        }
    }
    if let Some((key, value)) = root.get_key_value("region") {
        raw.regions = r.tables(key, value, "region", "[[region]]", |r, t, span| {
            let (mut region, broken) = r.scoped(|r| r.region(t, span));
            region.broken = broken;
            region
        });
    }
    if let Some((key, value)) = root.get_key_value("lab") {
        match value.get_ref() {
            DeValue::Table(t) => {
                let (mut lab, broken) = r.scoped(|r| r.lab(t, value.span()));
                lab.broken = broken;
                raw.lab = Some(lab);
            }
            DeValue::Array(_) => r.fail(
                "lab",
                key.span(),
                "lab must be one table; write [lab], not [[lab]]",
            ),
            other => {
                r.wrong_type(key, value, "a table", "[lab] on a line of its own", other);
                r.failed.push("lab");
            }
        }
    }
    raw.thresholds = thresholds::read(root, &mut r);
    raw.diff = ops::read_diff(root, &mut r);
    raw.schedule = ops::read_schedule(root, &mut r);
    raw.broken = std::mem::take(&mut r.failed);
    raw
}

struct Reader<'o> {
    out: &'o mut Vec<Problem>,
    /// Keys of the table being read that are present but unusable (wrong type or shape)
    /// or that a misspelt key most likely meant.
    failed: Vec<&'static str>,
}

impl Reader<'_> {
    fn problem(&mut self, span: Span, message: impl Into<String>) {
        self.out.push(Problem::new(span, message));
    }

    /// A problem that makes `key` unusable.
    fn fail(&mut self, key: &'static str, span: Span, message: impl Into<String>) {
        self.failed.push(key);
        self.problem(span, message);
    }

    /// Runs `read` on a nested table, returning what it read and the keys that failed
    /// in it (the enclosing table's list is kept apart).
    fn scoped<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> (T, Vec<&'static str>) {
        let outer = std::mem::take(&mut self.failed);
        let value = read(self);
        (value, std::mem::replace(&mut self.failed, outer))
    }

    fn probe(&mut self, t: &DeTable<'_>) -> RawProbe {
        self.unknown_keys(t, PROBE_KEYS, "in [probe]");
        RawProbe {
            kinds: self.strings(t, "kinds", r#"["icmp", "udp"]"#),
            count: self.integer(t, "count", "20"),
            interval: self.duration(t, "interval"),
            gap: self.duration(t, "gap"),
            timeout: self.duration(t, "timeout"),
            payload: self.integer(t, "payload", "56"),
        }
    }

    fn region(&mut self, t: &DeTable<'_>, span: Span) -> RawRegion {
        self.unknown_keys(t, REGION_KEYS, "in [[region]]");
        let mut region = RawRegion {
            span,
            name: self.string(t, "name", r#""us-east-1""#),
            targets: self.strings(t, "targets", r#"["10.0.0.1", "probe.example.com:443"]"#),
            source: self.string(t, "source", r#""10.0.0.5""#),
            ..RawRegion::default()
        };
        if let Some((key, value)) = t.get_key_value("location") {
            match value.get_ref() {
                DeValue::Table(l) => {
                    let (mut location, broken) = self.scoped(|r| r.location(l, value.span()));
                    location.broken = broken;
                    region.location = Some(location);
                }
                other => {
                    let example = "location = { lat = 38.9, lon = -77.4 }";
                    self.wrong_type(key, value, "a table", example, other);
                    self.failed.push("location");
                }
            }
        }
        region
    }

    fn location(&mut self, t: &DeTable<'_>, span: Span) -> RawLocation {
        self.unknown_keys(t, LOCATION_KEYS, "in location");
        RawLocation {
            span,
            lat: self.number(t, "lat", "38.9"),
            lon: self.number(t, "lon", "-77.4"),
            broken: Vec::new(),
        }
    }

    fn lab(&mut self, t: &DeTable<'_>, span: Span) -> RawLab {
        self.unknown_keys(t, LAB_KEYS, "in [lab]");
        let mut lab = RawLab {
            span,
            mode: self.string(t, "mode", r#""netns""#),
            matrix: self.string(t, "matrix", r#""lab/rtt.csv""#),
            loss: self.string(t, "loss", r#""lab/loss.csv""#),
            jitter_ms: self.number(t, "jitter_ms", "0.5"),
            port: self.integer(t, "port", "8620"),
            seed: self.integer(t, "seed", "1"),
            inflation: self.number(t, "inflation", "1.6"),
            base_ms: self.number(t, "base_ms", "1.0"),
            ..RawLab::default()
        };
        if let Some((key, value)) = t.get_key_value("fault") {
            lab.faults = self.tables(key, value, "fault", "[[lab.fault]]", |r, t, span| {
                let (mut fault, broken) = r.scoped(|r| r.fault(t, span));
                fault.broken = broken;
                fault
            });
        }
        lab
    }

    fn fault(&mut self, t: &DeTable<'_>, span: Span) -> RawFault {
        self.unknown_keys(t, FAULT_KEYS, "in [[lab.fault]]");
        RawFault {
            span,
            source: self.string(t, "source", r#""us-west-2""#),
            target: self.string(t, "target", r#""eu-central-1""#),
            both_directions: self.boolean(t, "both_directions", "true"),
            extra_ms: self.number(t, "extra_ms", "120.0"),
            loss_pct: self.number(t, "loss_pct", "5.0"),
            broken: Vec::new(),
        }
    }

    /// An array of tables (`[[header]]` or `key = [{...}, ...]`), each read with `each`.
    /// `name` is marked failed if the value is not an array of tables.
    fn tables<T>(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        name: &'static str,
        header: &str,
        mut each: impl FnMut(&mut Self, &DeTable<'_>, Span) -> T,
    ) -> Vec<T> {
        match value.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::Table(t) => out.push(each(self, t, item.span())),
                        other => self.fail(
                            name,
                            item.span(),
                            format!(
                                "each {name} must be a table, not {}; write {header} followed by its keys",
                                a(other.type_str())
                            ),
                        ),
                    }
                }
                out
            }
            DeValue::Table(_) => {
                self.fail(
                    name,
                    key.span(),
                    format!("{name} must be a list of tables; write {header} (double brackets) before each one"),
                );
                Vec::new()
            }
            other => {
                let example = format!("{header} before each one");
                self.wrong_type(key, value, "a list of tables", &example, other);
                self.failed.push(name);
                Vec::new()
            }
        }
    }

    /// Reports keys of `t` not in `allowed`. A key that looks like a misspelling of an
    /// allowed key marks that one failed.
    fn unknown_keys(&mut self, t: &DeTable<'_>, allowed: &[&'static str], place: &str) {
        for key in t.keys() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            // A key already in the table is not what a misspelling meant, unless it is a
            // list of tables (those repeat).
            let candidates: Vec<&'static str> = allowed
                .iter()
                .copied()
                .filter(|k| t.get(*k).is_none_or(|v| v.get_ref().is_array()))
                .collect();
            let message = match closest(name, &candidates) {
                Some(best) => {
                    self.failed.push(best);
                    format!("unknown key {name:?} {place}; did you mean {best:?}?")
                }
                None => format!(
                    "unknown key {name:?} {place}; the keys allowed here are {}",
                    list(allowed)
                ),
            };
            self.problem(key.span(), message);
        }
    }

    fn wrong_type(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        expected: &str,
        example: &str,
        found: &DeValue<'_>,
    ) {
        let name = key.get_ref();
        self.problem(
            value.span(),
            format!(
                "{name} must be {expected}, not {}; write it like {example}",
                a(found.type_str())
            ),
        );
    }

    /// `got`, marking `name` failed when it is `None` (the key was present but unusable).
    fn mark<T>(&mut self, name: &'static str, got: Option<T>) -> Option<T> {
        if got.is_none() {
            self.failed.push(name);
        }
        got
    }

    fn string(&mut self, t: &DeTable<'_>, name: &'static str, ex: &str) -> Option<At<String>> {
        let (key, value) = t.get_key_value(name)?;
        let got = match value.get_ref() {
            DeValue::String(s) => Some(at(key, value, s.to_string())),
            other => {
                self.wrong_type(key, value, "a string", &format!("{name} = {ex}"), other);
                None
            }
        };
        self.mark(name, got)
    }

    /// An integer, saturated to `i128` so that a huge literal fails the range check
    /// with the range's message.
    fn integer(&mut self, t: &DeTable<'_>, name: &'static str, ex: &str) -> Option<At<i128>> {
        let (key, value) = t.get_key_value(name)?;
        let got = match value.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str();
                let saturated = if digits.starts_with('-') {
                    i128::MIN
                } else {
                    i128::MAX
                };
                let n = i128::from_str_radix(digits, i.radix()).unwrap_or(saturated);
                Some(at(key, value, n))
            }
            DeValue::Float(_) => {
                let message = format!("{name} must be a whole number; write it like {name} = {ex}");
                self.problem(value.span(), message);
                None
            }
            other => {
                self.wrong_type(key, value, "an integer", &format!("{name} = {ex}"), other);
                None
            }
        };
        self.mark(name, got)
    }

    /// A number: an integer or a float. `nan` and `inf` come through (as such) and fail
    /// the range checks later.
    fn number(&mut self, t: &DeTable<'_>, name: &'static str, ex: &str) -> Option<At<f64>> {
        let (key, value) = t.get_key_value(name)?;
        let got = match value.get_ref() {
            DeValue::Float(f) => Some(f.as_str().parse::<f64>().unwrap_or(f64::NAN)),
            DeValue::Integer(i) => Some(
                i128::from_str_radix(i.as_str(), i.radix()).map_or(f64::INFINITY, |n| n as f64),
            ),
            other => {
                self.wrong_type(key, value, "a number", &format!("{name} = {ex}"), other);
                None
            }
        };
        let got = got.map(|n| at(key, value, n));
        self.mark(name, got)
    }

    fn boolean(&mut self, t: &DeTable<'_>, name: &'static str, ex: &str) -> Option<At<bool>> {
        let (key, value) = t.get_key_value(name)?;
        let got = match value.get_ref() {
            DeValue::Boolean(b) => Some(at(key, value, *b)),
            other => {
                self.wrong_type(
                    key,
                    value,
                    "true or false",
                    &format!("{name} = {ex}"),
                    other,
                );
                None
            }
        };
        self.mark(name, got)
    }

    /// A duration's text; it is parsed by `validate`.
    fn duration(&mut self, t: &DeTable<'_>, name: &'static str) -> Option<At<String>> {
        let (key, value) = t.get_key_value(name)?;
        let got = match value.get_ref() {
            DeValue::String(s) => Some(at(key, value, s.to_string())),
            DeValue::Integer(_) | DeValue::Float(_) => {
                let message = format!(
                    "{name} must be a string: durations are strings with a unit, like \"250ms\" or \"1s\""
                );
                self.problem(value.span(), message);
                None
            }
            other => {
                self.wrong_type(
                    key,
                    value,
                    "a string",
                    &format!("{name} = \"250ms\""),
                    other,
                );
                None
            }
        };
        self.mark(name, got)
    }

    fn strings(
        &mut self,
        t: &DeTable<'_>,
        name: &'static str,
        ex: &str,
    ) -> Option<At<Vec<At<String>>>> {
        let (key, value) = t.get_key_value(name)?;
        let DeValue::Array(items) = value.get_ref() else {
            let example = format!("{name} = {ex}");
            self.wrong_type(key, value, "a list of strings", &example, value.get_ref());
            return self.mark(name, None);
        };
        let mut ok = true;
        let mut list = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => list.push(At {
                    value: s.to_string(),
                    span: item.span(),
                    key: item.span(),
                }),
                other => {
                    ok = false;
                    let message = format!(
                        "each item of {name} must be a string, not {}; write it like {name} = {ex}",
                        a(other.type_str())
                    );
                    self.problem(item.span(), message);
                }
            }
        }
        let got = ok.then(|| at(key, value, list));
        self.mark(name, got)
    }
}

fn at<T>(key: &Key<'_>, value: &Value<'_>, v: T) -> At<T> {
    At {
        value: v,
        span: value.span(),
        key: key.span(),
    }
}

/// "a string", "an integer".
fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let root = DeTable::parse(text).expect("test text is valid TOML");
        let mut out = Vec::new();
        read(root.get_ref(), &mut out);
        out.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn shape_problems() {
        for (text, expected) in [
            ("probe = 5", "probe must be a table, not an integer"),
            ("[[probe]]", "write [probe], not [[probe]]"),
            (
                "[region]\nname = \"a\"",
                "write [[region]] (double brackets)",
            ),
            (
                "region = [1]",
                "each region must be a table, not an integer",
            ),
            ("[probe]\ncount = 2.5", "count must be a whole number"),
            (
                "[probe]\ncount = \"5\"",
                "count must be an integer, not a string",
            ),
            ("[probe]\ninterval = 5", "durations are strings with a unit"),
            (
                "[probe]\ntimeout = true",
                "timeout must be a string, not a boolean",
            ),
            (
                "[probe]\nkinds = \"udp\"",
                "kinds must be a list of strings, not a string",
            ),
            (
                "[probe]\nkinds = [\"udp\", 1]",
                "each item of kinds must be a string, not an integer",
            ),
            ("[[region]]\nlocation = 5", "location must be a table"),
            (
                "[[region]]\nlocation = { lat = \"1\" }",
                "lat must be a number, not a string",
            ),
            (
                "[[region]]\nlocation = { lat = 1, alt = 2 }",
                "unknown key \"alt\" in location",
            ),
            ("[lab]\nfault = 3", "fault must be a list of tables"),
            (
                "[[lab.fault]]\nboth_directions = 1",
                "both_directions must be true or false",
            ),
            (
                "colour = 1",
                "unknown key \"colour\" at the top level; the keys allowed here are \"probe\", \"region\", \"lab\", \"thresholds\", \"diff\" and \"schedule\"",
            ),
            (
                "[probe]\ncuont = 1",
                "unknown key \"cuont\" in [probe]; did you mean \"count\"?",
            ),
        ] {
            let got = problems(text);
            assert!(
                got.iter().any(|m| m.contains(expected)),
                "{text:?}: {got:?}"
            );
        }
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let got = problems("[probe]\na = 1\nb = 2\nc = 3\n");
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn huge_integers_saturate() {
        let root = DeTable::parse("[probe]\ncount = 999999999999999999999999999999999999999999")
            .expect("valid");
        let mut out = Vec::new();
        let raw = read(root.get_ref(), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            raw.probe.and_then(|p| p.count).map(|c| c.value),
            Some(i128::MAX)
        );
    }
}
