//! The raw shape of `regions.toml`: tables, keys and TOML types, with their spans.
//!
//! This module walks the spanned tree that `toml` parses and reads every key that
//! `keys` declares for the table it is in: its type checked by deserializing the value
//! alone (serde, one key at a time, so that one run reports every wrong type and not
//! only the first), its range checked, and the byte spans of key and value kept for
//! diagnostics. It reports unknown keys (with a "did you mean" when one is close) and
//! carries on. It gives values no meaning beyond their ranges: targets, names and
//! cross-references are checked by `validate` and `lab`.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use humantime::DurationError;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keys::{self, Key, Kind, Section};
use super::suggest::{closest, list};

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

impl<T> At<T> {
    fn map<U>(&self, f: impl FnOnce(&T) -> Option<U>) -> Option<At<U>> {
        Some(At {
            value: f(&self.value)?,
            span: self.span.clone(),
            key: self.key.clone(),
        })
    }
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

/// A value of the type its key declares, in the key's range.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Integer(i128),
    Bool(bool),
    Text(String),
    Texts(Vec<At<String>>),
    Duration(Duration),
}

/// One table of the file: the usable values of its keys, by key.
#[derive(Debug, Default)]
pub(super) struct Table {
    /// The table's header (or inline table).
    pub span: Span,
    values: Vec<(&'static str, At<Value>)>,
    /// Keys present but unusable (wrong type or shape, out of range), or meant by a
    /// misspelt key: "missing" is not reported on top of that.
    pub broken: Vec<&'static str>,
    /// Whether the table has a key that is not allowed (reported by itself).
    pub unknown_keys: bool,
}

impl Table {
    fn get(&self, k: &Key) -> Option<&At<Value>> {
        self.values
            .iter()
            .find(|(n, _)| *n == k.name)
            .map(|(_, v)| v)
    }

    /// Where the key's usable value is.
    pub fn get_span(&self, k: &Key) -> Option<Span> {
        self.get(k).map(|v| v.span.clone())
    }

    /// Whether the key has a usable value.
    pub fn has(&self, k: &Key) -> bool {
        self.get(k).is_some()
    }

    /// Whether the key is present but unusable (reported), or meant by a misspelt key.
    pub fn is_broken(&self, k: &Key) -> bool {
        self.broken.contains(&k.name)
    }

    /// The key's number, else its default; `None` when it is broken (reported).
    pub fn number_or_default(&self, k: &Key) -> Option<f64> {
        (!self.is_broken(k)).then(|| self.number(k).map_or(k.number(), |v| v.value))
    }

    /// The key's whole number, else its default; `None` when it is broken (reported).
    pub fn integer_or_default(&self, k: &Key) -> Option<i128> {
        (!self.is_broken(k)).then(|| self.integer(k).map_or(k.integer(), |v| v.value))
    }
}

/// The typed accessors of [`Table`]: the key's usable value, with its spans.
macro_rules! accessors {
    ($($name:ident -> $t:ty = $variant:ident($v:ident) => $out:expr;)*) => {
        impl Table {
            $(pub fn $name(&self, k: &Key) -> Option<At<$t>> {
                let at = self.get(k)?;
                match &at.value {
                    Value::$variant($v) => Some(At { value: $out, span: at.span.clone(), key: at.key.clone() }),
                    _ => None,
                }
            })*
        }
    };
}

accessors! {
    number -> f64 = Number(n) => *n;
    integer -> i128 = Integer(n) => *n;
    flag -> bool = Bool(b) => *b;
    text -> &str = Text(s) => s.as_str();
    texts -> &[At<String>] = Texts(v) => v.as_slice();
    duration -> Duration = Duration(d) => *d;
}

/// The whole file.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub probe: Option<Table>,
    pub regions: Vec<RawRegion>,
    pub lab: Option<Table>,
    /// `[[lab.fault]]`.
    pub faults: Vec<Table>,
    pub thresholds: Option<Table>,
    /// `[[thresholds.pair]]`.
    pub pairs: Vec<Table>,
    pub diff: Option<Table>,
    pub schedule: Option<Table>,
    /// Top-level keys present but unusable, or meant by a misspelt key.
    pub broken: Vec<&'static str>,
}

/// One `[[region]]`, with its `location`.
#[derive(Debug, Default)]
pub(super) struct RawRegion {
    pub table: Table,
    pub location: Option<Table>,
}

type TomlKey<'i> = Spanned<Cow<'i, str>>;
type TomlValue<'i> = Spanned<DeValue<'i>>;

/// Reads the parsed document. Every problem found is pushed to `out`.
pub(super) fn read(root: &DeTable<'_>, out: &mut Vec<Problem>) -> RawConfig {
    let mut r = Reader {
        out,
        failed: Vec::new(),
    };
    r.unknown_keys(root, &keys::top::SECTION);
    let mut raw = RawConfig {
        probe: r.one(root, &keys::probe::SECTION),
        diff: r.one(root, &keys::diff::SECTION),
        schedule: r.one(root, &keys::schedule::SECTION),
        ..RawConfig::default()
    };
    if let Some((key, value)) = root.get_key_value("region") {
        raw.regions = r.tables(key, value, "region", "[[region]]", |r, t, span| {
            let mut region = RawRegion {
                table: r.table(t, span, &keys::region::SECTION),
                location: None,
            };
            if let Some((key, value)) = t.get_key_value(keys::region::LOCATION.name) {
                match value.get_ref() {
                    DeValue::Table(l) => {
                        region.location = Some(r.table(l, value.span(), &keys::location::SECTION))
                    }
                    other => {
                        let example = "location = { lat = 38.9, lon = -77.4 }";
                        r.wrong_type(key, value, "a table", example, other);
                        region.table.broken.push(keys::region::LOCATION.name);
                    }
                }
            }
            region
        });
    }
    let nested = [
        (
            &keys::lab::SECTION,
            &keys::lab::FAULT,
            &keys::fault::SECTION,
        ),
        (
            &keys::thresholds::SECTION,
            &keys::thresholds::PAIR,
            &keys::pair::SECTION,
        ),
    ];
    for (section, key, each) in nested {
        let Some(t) = r.de_table(root, section) else {
            continue;
        };
        let mut table = r.table(t.0, t.1, section);
        let mut list = Vec::new();
        if let Some((k, value)) = t.0.get_key_value(key.name) {
            let failed = std::mem::take(&mut r.failed);
            list = r.tables(k, value, key.name, each.header, |r, t, span| {
                r.table(t, span, each)
            });
            table
                .broken
                .extend(std::mem::replace(&mut r.failed, failed));
        }
        if section.header == "[lab]" {
            (raw.lab, raw.faults) = (Some(table), list);
        } else {
            (raw.thresholds, raw.pairs) = (Some(table), list);
        }
    }
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

    /// The top-level table `[name]` as written, or a problem saying how to write it.
    fn de_table<'a, 'i>(
        &mut self,
        root: &'a DeTable<'i>,
        section: &Section,
    ) -> Option<(&'a DeTable<'i>, Span)> {
        let name = section.header.trim_matches(['[', ']']);
        let (key, value) = root.get_key_value(name)?;
        match value.get_ref() {
            DeValue::Table(t) => Some((t, value.span())),
            DeValue::Array(_) => {
                let name = keys::top::SECTION
                    .keys
                    .iter()
                    .find(|k| k.name == name)?
                    .name;
                self.fail(
                    name,
                    key.span(),
                    format!("{name} must be one table; write [{name}], not [[{name}]]"),
                );
                None
            }
            other => {
                let example = format!("[{name}] on a line of its own");
                self.wrong_type(key, value, "a table", &example, other);
                if let Some(k) = keys::top::SECTION.keys.iter().find(|k| k.name == name) {
                    self.failed.push(k.name);
                }
                None
            }
        }
    }

    /// A top-level table without nested tables.
    fn one(&mut self, root: &DeTable<'_>, section: &Section) -> Option<Table> {
        let (t, span) = self.de_table(root, section)?;
        Some(self.table(t, span, section))
    }

    /// Every key of `section` in `t`, each read as its kind, and the unknown ones
    /// reported. Nested tables are left to the caller.
    fn table(&mut self, t: &DeTable<'_>, span: Span, section: &Section) -> Table {
        let outer = std::mem::take(&mut self.failed);
        self.unknown_keys(t, section);
        let mut values = Vec::new();
        for k in section.keys {
            let value = match k.kind {
                Kind::Number => self
                    .number(t, k)
                    .and_then(|v| v.map(|n| Some(Value::Number(*n)))),
                Kind::Integer => self
                    .integer(t, k)
                    .and_then(|v| v.map(|n| Some(Value::Integer(*n)))),
                Kind::Bool => self
                    .boolean(t, k)
                    .and_then(|v| v.map(|b| Some(Value::Bool(*b)))),
                Kind::Text => self
                    .string(t, k)
                    .and_then(|v| v.map(|s| Some(Value::Text(s.clone())))),
                Kind::Texts => self
                    .strings(t, k)
                    .and_then(|v| v.map(|l| Some(Value::Texts(l.clone())))),
                Kind::Duration => self
                    .duration(t, k)
                    .and_then(|v| v.map(|d| Some(Value::Duration(*d)))),
                Kind::Table | Kind::Tables => None,
            };
            if let Some(v) = value {
                values.push((k.name, v));
            }
        }
        let names = section.names();
        Table {
            span,
            values,
            broken: std::mem::replace(&mut self.failed, outer),
            unknown_keys: t.keys().any(|k| !names.contains(&k.get_ref().as_ref())),
        }
    }

    /// An array of tables (`[[header]]` or `key = [{...}, ...]`), each read with `each`.
    /// `name` is marked failed if the value is not an array of tables.
    fn tables<T>(
        &mut self,
        key: &TomlKey<'_>,
        value: &TomlValue<'_>,
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
        value: &TomlValue<'_>,
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

fn at<T>(key: &TomlKey<'_>, value: &TomlValue<'_>, v: T) -> At<T> {
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
