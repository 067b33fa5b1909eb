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
use std::time::Duration;

use humantime::DurationError;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keys::{self, Key, Section};
use super::suggest::{closest, list};

mod ops;
mod thresholds;

pub(super) use ops::{RawDiff, RawSchedule};
pub(super) use thresholds::{RawLimits, RawPair, RawThresholds};

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
    pub interval: Option<At<Duration>>,
    pub gap: Option<At<Duration>>,
    pub timeout: Option<At<Duration>>,
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

type TomlKey<'i> = Spanned<Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Reads the parsed document. Every problem found is pushed to `out`.
pub(super) fn read(root: &DeTable<'_>, out: &mut Vec<Problem>) -> RawConfig {
    let mut r = Reader {
        out,
        failed: Vec::new(),
    };
    r.unknown_keys(root, &keys::top::SECTION);
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
        use keys::probe::*;
        self.unknown_keys(t, &SECTION);
        RawProbe {
            kinds: self.strings(t, &KINDS),
            count: self.integer(t, &COUNT),
            interval: self.duration(t, &INTERVAL),
            gap: self.duration(t, &GAP),
            timeout: self.duration(t, &TIMEOUT),
            payload: self.integer(t, &PAYLOAD),
        }
    }

    fn region(&mut self, t: &DeTable<'_>, span: Span) -> RawRegion {
        use keys::region::*;
        self.unknown_keys(t, &SECTION);
        let mut region = RawRegion {
            span,
            name: self.string(t, &NAME),
            targets: self.strings(t, &TARGETS),
            source: self.string(t, &SOURCE),
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
        use keys::location::*;
        self.unknown_keys(t, &SECTION);
        RawLocation {
            span,
            lat: self.number(t, &LAT),
            lon: self.number(t, &LON),
            broken: Vec::new(),
        }
    }

    fn lab(&mut self, t: &DeTable<'_>, span: Span) -> RawLab {
        use keys::lab::*;
        self.unknown_keys(t, &SECTION);
        let mut lab = RawLab {
            span,
            mode: self.string(t, &MODE),
            matrix: self.string(t, &MATRIX),
            loss: self.string(t, &LOSS),
            jitter_ms: self.number(t, &JITTER_MS),
            port: self.integer(t, &PORT),
            seed: self.integer(t, &SEED),
            inflation: self.number(t, &INFLATION),
            base_ms: self.number(t, &BASE_MS),
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
        use keys::fault::*;
        self.unknown_keys(t, &SECTION);
        RawFault {
            span,
            source: self.string(t, &SOURCE),
            target: self.string(t, &TARGET),
            both_directions: self.boolean(t, &BOTH_DIRECTIONS),
            extra_ms: self.number(t, &EXTRA_MS),
            loss_pct: self.number(t, &LOSS_PCT),
            broken: Vec::new(),
        }
    }

    /// An array of tables (`[[header]]` or `key = [{...}, ...]`), each read with `each`.
    /// `name` is marked failed if the value is not an array of tables.
    fn tables<T>(
        &mut self,
        key: &TomlKey<'_>,
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
    fn unknown_keys(&mut self, t: &DeTable<'_>, section: &Section) {
        let (allowed, place) = (&section.names()[..], section.place);
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
        key: &TomlKey<'_>,
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

    fn string(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<String>> {
        let (key, value) = t.get_key_value(k.name)?;
        let got = match value.get_ref() {
            DeValue::String(s) => Some(at(key, value, s.to_string())),
            other => {
                self.wrong_type(key, value, "a string", &like(k), other);
                None
            }
        };
        self.mark(k.name, got)
    }

    /// A value in the key's range, or a problem at it (the key is then unusable).
    fn in_range<T>(
        &mut self,
        k: &Key,
        got: Option<At<T>>,
        why: impl Fn(&T) -> Option<String>,
    ) -> Option<At<T>> {
        let got = got.and_then(|v| match why(&v.value) {
            None => Some(v),
            Some(why) => {
                self.problem(v.span.clone(), format!("{} {why}", k.name));
                None
            }
        });
        self.mark(k.name, got)
    }

    /// An integer in the key's range. A huge literal is saturated to `i128`, so that it
    /// fails the range check with the range's message.
    fn integer(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<i128>> {
        let (key, value) = t.get_key_value(k.name)?;
        let got = match value.get_ref() {
            DeValue::Integer(i) => {
                let n = match i64::deserialize(value.clone().into_deserializer()) {
                    Ok(n) => i128::from(n),
                    Err(_) if i.as_str().starts_with('-') => i128::MIN,
                    Err(_) => u64::deserialize(value.clone().into_deserializer())
                        .map_or(i128::MAX, i128::from),
                };
                Some(at(key, value, n))
            }
            DeValue::Float(_) => {
                let message = format!(
                    "{} must be a whole number; write it like {}",
                    k.name,
                    like(k)
                );
                self.problem(value.span(), message);
                None
            }
            other => {
                self.wrong_type(key, value, "an integer", &like(k), other);
                None
            }
        };
        self.in_range(k, got, |n| k.range.integer(*n))
    }

    /// A number (an integer or a float) in the key's range; `nan` and `inf` are in none.
    fn number(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<f64>> {
        let (key, value) = t.get_key_value(k.name)?;
        let got = match value.get_ref() {
            DeValue::Float(_) | DeValue::Integer(_) => {
                let n =
                    f64::deserialize(value.clone().into_deserializer()).unwrap_or(f64::INFINITY);
                Some(at(key, value, n))
            }
            other => {
                self.wrong_type(key, value, "a number", &like(k), other);
                None
            }
        };
        self.in_range(k, got, |n| k.range.number(*n))
    }

    fn boolean(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<bool>> {
        let (key, value) = t.get_key_value(k.name)?;
        let got = match bool::deserialize(value.clone().into_deserializer()) {
            Ok(b) => Some(at(key, value, b)),
            Err(_) => {
                self.wrong_type(key, value, "true or false", &like(k), value.get_ref());
                None
            }
        };
        self.mark(k.name, got)
    }

    /// A duration (a string with a unit) in the key's range.
    fn duration(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<Duration>> {
        let (key, value) = t.get_key_value(k.name)?;
        let name = k.name;
        let got = match value.get_ref() {
            DeValue::String(s) => match parse_duration(name, s) {
                Ok(d) => Some(at(key, value, d)),
                Err(message) => {
                    self.problem(value.span(), message);
                    None
                }
            },
            DeValue::Integer(_) | DeValue::Float(_) => {
                let message = format!(
                    "{name} must be a string: durations are strings with a unit, like \"250ms\" or \"1s\""
                );
                self.problem(value.span(), message);
                None
            }
            other => {
                self.wrong_type(key, value, "a string", &like(k), other);
                None
            }
        };
        self.in_range(k, got, |d| k.range.duration(*d))
    }

    fn strings(&mut self, t: &DeTable<'_>, k: &Key) -> Option<At<Vec<At<String>>>> {
        let (key, value) = t.get_key_value(k.name)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, "a list of strings", &like(k), value.get_ref());
            return self.mark(k.name, None);
        };
        let mut ok = true;
        let mut list = Vec::new();
        for item in items.iter() {
            match String::deserialize(item.clone().into_deserializer()) {
                Ok(s) => list.push(At {
                    value: s,
                    span: item.span(),
                    key: item.span(),
                }),
                Err(_) => {
                    ok = false;
                    let message = format!(
                        "each item of {} must be a string, not {}; write it like {}",
                        k.name,
                        a(item.get_ref().type_str()),
                        like(k)
                    );
                    self.problem(item.span(), message);
                }
            }
        }
        let got = ok.then(|| at(key, value, list));
        self.mark(k.name, got)
    }
}

/// `name = example`, for "write it like ...".
fn like(k: &Key) -> String {
    format!("{} = {}", k.name, k.example)
}

/// Parses a humantime duration, saying in our words what is wrong if it is not one.
pub(super) fn parse_duration(key: &str, text: &str) -> Result<Duration, String> {
    let like = "like \"250ms\" or \"1s\"";
    humantime::parse_duration(text).map_err(|e| match e {
        DurationError::Empty => format!("{key} is empty; write a duration {like}"),
        DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("{key} = {text:?} has no unit; write it like \"{value}ms\" or \"{value}s\"")
        }
        DurationError::UnknownUnit { unit, .. } => {
            format!(
                "{key} = {text:?} has an unknown unit {unit:?}; use ns, us, ms, s, m or h, {like}"
            )
        }
        DurationError::NumberOverflow => {
            format!("{key} = {text:?} is too large or too precise; write a duration {like}")
        }
        _ => format!("{key} = {text:?} is not a duration; write a number and a unit, {like}"),
    })
}

fn at<T>(key: &TomlKey<'_>, value: &Value<'_>, v: T) -> At<T> {
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
    fn huge_integers_fail_the_range_check() {
        for (text, want) in [
            (
                "[probe]\ncount = 999999999999999999999999999999999999999999",
                "count is out of range; use a whole number from 1 to 1000000",
            ),
            (
                "[lab]\nseed = -99999999999999999999999",
                "seed is out of range; use a whole number >= 0",
            ),
            ("[lab]\nseed = 18446744073709551615", ""),
        ] {
            let got = problems(text);
            if want.is_empty() {
                assert!(got.is_empty(), "{text}: {got:?}");
            } else {
                assert_eq!(got, [want], "{text}");
            }
        }
    }
}
