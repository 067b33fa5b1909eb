//! Every key of `regions.toml`, declared once: its name, type, default, range and
//! meaning.
//!
//! The reader (`raw`) takes its key lists and types from here, the checks take the
//! ranges, the typed settings take their defaults, the CLI checks its flags with the
//! same ranges (so a flag and a key that set one setting accept the same values, with
//! the same words), and a test holds `docs/config.md` to the table. This module gives
//! no value a meaning beyond its range: cross-references are checked elsewhere.

use std::time::Duration;

use super::Location;

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer or a float.
    Number,
    Integer,
    Bool,
    Text,
    /// A list of strings.
    Texts,
    /// A string with a unit, like `"250ms"` (humantime).
    Duration,
    /// A table (`location = { ... }`, `[lab]`).
    Table,
    /// A list of tables (`[[region]]`).
    Tables,
}

/// The values a key accepts. The text after the key's name in a message comes from
/// here, for a key of the file and for the flag that sets the same setting alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// Anything of the right type.
    Any,
    /// A number from `.0` to `.1` (`.1` infinite: no upper bound).
    Closed(f64, f64),
    /// A number above `.0`, described as `.1` ("a number of milliseconds").
    Above(f64, &'static str),
    /// A number strictly between `.0` and `.1`, with an example.
    Between(f64, f64, &'static str),
    /// A whole number from `.0` to `.1`.
    Whole(i128, i128),
    /// A duration above 0 and at most `.0`, written as `.1`.
    AtMost(Duration, &'static str),
    /// A duration above 0.
    Positive,
    /// A sweep period: whole seconds, at least one (run ids and epochs name seconds).
    Period,
}

impl Range {
    /// What is wrong with the number `v`, as the words after the key's name.
    pub fn number(self, v: f64) -> Option<String> {
        let ok = v.is_finite()
            && match self {
                Range::Closed(lo, hi) => v >= lo && v <= hi,
                Range::Above(lo, _) => v > lo,
                Range::Between(lo, hi, _) => v > lo && v < hi,
                _ => true,
            };
        let use_ = match self {
            _ if ok => return None,
            Range::Closed(lo, hi) if hi.is_infinite() => format!("a number >= {lo}"),
            Range::Closed(lo, hi) => format!("a number from {lo} to {hi}"),
            Range::Above(lo, what) => format!("{what} above {lo}"),
            Range::Between(lo, hi, like) => {
                format!("a number above {lo} and below {hi}, like {like}")
            }
            _ => "a finite number".to_string(),
        };
        Some(format!("is out of range; use {use_}"))
    }

    /// What is wrong with the whole number `v`, as the words after the key's name.
    pub fn integer(self, v: i128) -> Option<String> {
        let Range::Whole(lo, hi) = self else {
            return None;
        };
        if (lo..=hi).contains(&v) {
            return None;
        }
        // TOML integers are 64-bit: a bound beyond that is no bound.
        Some(if hi >= i128::from(i64::MAX) {
            format!("is out of range; use a whole number >= {lo}")
        } else {
            format!("is out of range; use a whole number from {lo} to {hi}")
        })
    }

    /// What is wrong with the duration `d`, as the words after the key's name.
    pub fn duration(self, d: Duration) -> Option<String> {
        match self {
            Range::AtMost(max, text) if d.is_zero() || d > max => Some(format!(
                "is out of range; use a duration above 0 and at most \"{text}\""
            )),
            Range::Positive | Range::Period if d.is_zero() => Some("must be above 0".into()),
            Range::Period if d.subsec_nanos() != 0 || d < Duration::from_secs(1) => Some(format!(
                "must be whole seconds, at least 1s (got {}): a sweep's run is named by the \
                 second it starts; write it like \"30s\" or \"5m\"",
                humantime::format_duration(d)
            )),
            _ => None,
        }
    }
}

/// The default of a key, as the typed settings take it and the docs show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Number(f64),
    Integer(i128),
    Bool(bool),
    /// A string or a duration, as written in the file.
    Text(&'static str),
    /// No value: the setting is off, or derived (the docs say how).
    Unset,
}

/// One key of a table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    pub range: Range,
    /// The value shown in "write it like NAME = EXAMPLE".
    pub example: &'static str,
    /// One line: what the key does.
    pub doc: &'static str,
}

impl Key {
    /// The default number (0 for a key without one).
    pub fn number(&self) -> f64 {
        match self.default {
            Default::Number(v) => v,
            Default::Integer(v) => v as f64,
            _ => 0.0,
        }
    }

    /// The default whole number (0 for a key without one).
    pub fn integer(&self) -> i128 {
        match self.default {
            Default::Integer(v) => v,
            _ => 0,
        }
    }

    /// The default duration (zero for a key without one).
    pub fn duration(&self) -> Duration {
        match self.default {
            Default::Text(t) => humantime::parse_duration(t).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    /// The flag that sets the same setting: `--keep-for` for `keep_for`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// A number given by this key's flag, checked against the key's range; the error
    /// names the flag.
    pub fn check_number(&self, v: f64) -> Result<f64, String> {
        match self.range.number(v) {
            None => Ok(v),
            Some(why) => Err(format!("{} {why}", self.flag())),
        }
    }

    /// A whole number given by this key's flag, checked like [`Key::check_number`].
    pub fn check_integer(&self, v: i128) -> Result<i128, String> {
        match self.range.integer(v) {
            None => Ok(v),
            Some(why) => Err(format!("{} {why}", self.flag())),
        }
    }

    /// A duration given by this key's flag, checked like [`Key::check_number`].
    pub fn check_duration(&self, d: Duration) -> Result<Duration, String> {
        match self.range.duration(d) {
            None => Ok(d),
            Some(why) => Err(format!("{} {why}", self.flag())),
        }
    }
}

/// A table of the file and its keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Section {
    /// How the table is written: `[probe]`, `[[region]]`, `location`.
    pub header: &'static str,
    /// Where its keys are, in a message: "in [probe]", "at the top level".
    pub place: &'static str,
    pub keys: &'static [Key],
}

impl Section {
    pub fn names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|k| k.name).collect()
    }
}

const fn key(
    name: &'static str,
    kind: Kind,
    default: Default,
    range: Range,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        range,
        example,
        doc,
    }
}

const fn num(name: &'static str, default: f64, range: Range, doc: &'static str) -> Key {
    key(name, Kind::Number, Default::Number(default), range, "", doc)
}

const fn int(name: &'static str, default: i128, range: Range, doc: &'static str) -> Key {
    key(
        name,
        Kind::Integer,
        Default::Integer(default),
        range,
        "",
        doc,
    )
}

const fn dur(name: &'static str, default: Default, range: Range, doc: &'static str) -> Key {
    key(name, Kind::Duration, default, range, "\"250ms\"", doc)
}

const fn text(name: &'static str, example: &'static str, doc: &'static str) -> Key {
    key(name, Kind::Text, Default::Unset, Range::Any, example, doc)
}

const fn texts(name: &'static str, example: &'static str, doc: &'static str) -> Key {
    key(name, Kind::Texts, Default::Unset, Range::Any, example, doc)
}

const fn table(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    key(name, kind, Default::Unset, Range::Any, "", doc)
}

const fn flag(name: &'static str, doc: &'static str) -> Key {
    key(
        name,
        Kind::Bool,
        Default::Bool(false),
        Range::Any,
        "true",
        doc,
    )
}

/// With an example other than the default.
const fn like(k: Key, example: &'static str) -> Key {
    Key { example, ..k }
}

const INF: f64 = f64::INFINITY;
const AT_LEAST_0: Range = Range::Closed(0.0, INF);
/// The milliseconds a lab can add to a path: at most the longest probe timeout (a
/// slower path is a lost one; give it a loss instead).
pub const MAX_LAB_MS: f64 = 60_000.0;
const LAB_MS: Range = Range::Closed(0.0, MAX_LAB_MS);
const PERCENT: Range = Range::Closed(0.0, 100.0);

/// Most probes per path per sweep.
pub const MAX_COUNT: i128 = 1_000_000;
/// Largest payload, in bytes (fits a 1500-byte MTU with IPv6 and STAMP headers).
pub const MAX_PAYLOAD: i128 = 1400;
/// Longest probe timeout: no reply can take longer, so no RTT sample can either.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Declares a table's keys: `pub mod NAME { pub const KEY: Key; pub const SECTION }`.
macro_rules! section {
    ($(#[$doc:meta])* $name:ident, $header:literal, $place:literal { $($id:ident = $key:expr;)* }) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;
            $(pub const $id: Key = $key;)*
            pub const SECTION: Section = Section { header: $header, place: $place, keys: &[$($id),*] };
        }
    };
}

section! {
    /// The top level.
    top, "", "at the top level" {
        PROBE = table("probe", Kind::Table, "how each prober sends");
        REGION = table("region", Kind::Tables, "one table per region");
        LAB = table("lab", Kind::Table, "an emulated WAN on this machine");
        THRESHOLDS = table("thresholds", Kind::Table, "the limits of the anomaly detectors");
        DIFF = table("diff", Kind::Table, "the thresholds of latmap diff");
        SCHEDULE = table("schedule", Kind::Table, "when sweeps and agents run");
    }
}

section! {
    /// `[probe]`.
    probe, "[probe]", "in [probe]" {
        KINDS = texts("kinds", r#"["icmp", "udp"]"#, "the probe kinds run on every path");
        COUNT = like(int("count", 20, Range::Whole(1, MAX_COUNT), "probes per path per sweep"), "20");
        INTERVAL = dur("interval", Default::Text("100ms"), Range::Any, "time between two probes to the same target");
        GAP = dur("gap", Default::Text("1ms"), Range::Any, "smallest time between any two sends of one prober");
        TIMEOUT = dur("timeout", Default::Text("1s"), Range::AtMost(MAX_TIMEOUT, "60s"), "how long to wait for a reply");
        PAYLOAD = key("payload", Kind::Integer, Default::Unset, Range::Whole(0, MAX_PAYLOAD), "56", "payload bytes per probe");
    }
}

section! {
    /// `[[region]]`.
    region, "[[region]]", "in [[region]]" {
        NAME = text("name", r#""us-east-1""#, "the region's name");
        LOCATION = table("location", Kind::Table, "where the region is");
        TARGETS = texts("targets", r#"["10.0.0.1", "probe.example.com:443"]"#, "the addresses other regions probe");
        SOURCE = text("source", r#""10.0.0.5""#, "the address a prober in this region binds");
    }
}

section! {
    /// `location = { lat, lon }`.
    location, "location", "in location" {
        LAT = key("lat", Kind::Number, Default::Unset, Range::Closed(*Location::LAT.start(), *Location::LAT.end()), "38.9", "latitude in degrees");
        LON = key("lon", Kind::Number, Default::Unset, Range::Closed(*Location::LON.start(), *Location::LON.end()), "-77.4", "longitude in degrees");
    }
}

section! {
    /// `[lab]`.
    lab, "[lab]", "in [lab]" {
        MODE = key("mode", Kind::Text, Default::Text("loopback"), Range::Any, r#""netns""#, "how the WAN is emulated");
        MATRIX = text("matrix", r#""lab/rtt.csv""#, "RTTs between regions (CSV)");
        LOSS = text("loss", r#""lab/loss.csv""#, "loss between regions (CSV)");
        JITTER_MS = like(num("jitter_ms", 0.0, LAB_MS, "uniform RTT noise in milliseconds"), "0.5");
        PORT = like(int("port", 8620, Range::Whole(0, u16::MAX as i128), "UDP port of every region's reflector"), "8620");
        SEED = like(int("seed", 1, Range::Whole(0, u64::MAX as i128), "seed of the lab's random loss and jitter"), "1");
        INFLATION = like(num("inflation", 1.6, Range::Closed(1.0, 100.0), "factor on the fibre distance in a geo lab"), "1.6");
        BASE_MS = like(num("base_ms", 1.0, LAB_MS, "fixed RTT added to every path in a geo lab"), "1.0");
        FAULT = table("fault", Kind::Tables, "faults injected into the lab");
    }
}

section! {
    /// `[[lab.fault]]`.
    fault, "[[lab.fault]]", "in [[lab.fault]]" {
        SOURCE = text("source", r#""us-west-2""#, "the region the path starts from");
        TARGET = text("target", r#""eu-central-1""#, "the region the path goes to");
        BOTH_DIRECTIONS = flag("both_directions", "also apply to the reverse direction");
        EXTRA_MS = like(num("extra_ms", 0.0, LAB_MS, "extra RTT in milliseconds"), "120.0");
        LOSS_PCT = like(num("loss_pct", 0.0, PERCENT, "extra loss in percent"), "5.0");
    }
}

/// The limits a `[[thresholds.pair]]` rule may override, as in `[thresholds]`.
pub mod limits {
    use super::*;
    pub const SLO_P95_MS: Key = like(
        key(
            "slo_p95_ms",
            Kind::Number,
            Default::Unset,
            Range::Above(0.0, "a number of milliseconds"),
            "",
            "slo: a path's p95 RTT must not exceed this",
        ),
        "150",
    );
    pub const LOSS_WARNING_PCT: Key = like(
        num(
            "loss_warning_pct",
            0.1,
            PERCENT,
            "loss warns from this Wilson lower bound",
        ),
        "0.1",
    );
    pub const LOSS_CRITICAL_PCT: Key = like(
        num(
            "loss_critical_pct",
            1.0,
            PERCENT,
            "... and is critical from this",
        ),
        "1.0",
    );
    pub const LOSS_MIN_LOST: Key = like(
        int(
            "loss_min_lost",
            2,
            Range::Whole(1, u32::MAX as i128),
            "... when at least this many probes were lost",
        ),
        "2",
    );
    pub const JITTER_WARNING_MS: Key = like(
        num(
            "jitter_warning_ms",
            10.0,
            AT_LEAST_0,
            "jitter warns above this",
        ),
        "10",
    );
    pub const JITTER_CRITICAL_MS: Key = like(
        num(
            "jitter_critical_ms",
            50.0,
            AT_LEAST_0,
            "... and is critical above this",
        ),
        "50",
    );
    pub const SKIP: Key = texts(
        "skip",
        r#"["asymmetry"]"#,
        "detectors that do not judge these paths",
    );
    pub const ALL: &[Key] = &[
        SLO_P95_MS,
        LOSS_WARNING_PCT,
        LOSS_CRITICAL_PCT,
        LOSS_MIN_LOST,
        JITTER_WARNING_MS,
        JITTER_CRITICAL_MS,
        SKIP,
    ];
}

section! {
    /// `[thresholds]`.
    thresholds, "[thresholds]", "in [thresholds]" {
        LOSS_WARNING_PCT = limits::LOSS_WARNING_PCT;
        LOSS_CRITICAL_PCT = limits::LOSS_CRITICAL_PCT;
        LOSS_MIN_LOST = limits::LOSS_MIN_LOST;
        SLO_P95_MS = limits::SLO_P95_MS;
        DETOUR_MIN_PCT = like(num("detour_min_pct", 20.0, PERCENT, "detour: a relay must save this share of the direct RTT"), "20");
        DETOUR_MIN_MS = like(num("detour_min_ms", 5.0, AT_LEAST_0, "... and this many milliseconds"), "5");
        INFLATION_FACTOR = like(num("inflation_factor", 3.0, Range::Closed(1.0, INF), "inflation: p50 above this multiple of the fiber bound"), "3.0");
        INFLATION_MIN_MS = like(num("inflation_min_ms", 5.0, AT_LEAST_0, "... by at least this many milliseconds"), "5");
        ASYMMETRY_MIN_PCT = like(num("asymmetry_min_pct", 25.0, AT_LEAST_0, "asymmetry: the slow direction exceeds the fast one by this share"), "25");
        ASYMMETRY_MIN_MS = like(num("asymmetry_min_ms", 5.0, AT_LEAST_0, "... and this many milliseconds"), "5");
        JITTER_WARNING_MS = limits::JITTER_WARNING_MS;
        JITTER_CRITICAL_MS = limits::JITTER_CRITICAL_MS;
        REGION_MIN_SHARE = like(num("region_min_share", 0.5, Range::Closed(0.0, 1.0), "region: more than this share of a region's paths"), "0.5");
        REGION_MIN_PATHS = like(int("region_min_paths", 3, Range::Whole(1, u32::MAX as i128), "... and at least this many"), "3");
        SHIFT_WINDOW = like(int("shift_window", 24, Range::Whole(2, 1000), "shift: earlier runs a path's reference is built from"), "24");
        SHIFT_MIN_RUNS = like(int("shift_min_runs", 12, Range::Whole(1, 1000), "shift: earlier runs a path needs before it is judged (at most shift_window)"), "12");
        SHIFT_MARGIN_PCT = like(num("shift_margin_pct", 8.0, AT_LEAST_0, "shift: the band reaches at least this share of the reference"), "8");
        SHIFT_MARGIN_MS = like(num("shift_margin_ms", 1.0, AT_LEAST_0, "... and at least this many milliseconds"), "1");
        SHIFT_DEVIATIONS = like(num("shift_deviations", 5.0, Range::Above(0.0, "a number"), "... and at least this many robust deviations"), "5");
        SKIP = limits::SKIP;
        PAIR = table("pair", Kind::Tables, "limits for some pairs of regions");
    }
}

section! {
    /// `[[thresholds.pair]]`.
    pair, "[[thresholds.pair]]", "in [[thresholds.pair]]" {
        SOURCE = text("source", r#""us-*""#, "a region name or pattern");
        TARGET = text("target", r#""eu-central-1""#, "the same, for the target region");
        BOTH_DIRECTIONS = flag("both_directions", "also apply to the paths from target to source");
        SLO_P95_MS = limits::SLO_P95_MS;
        LOSS_WARNING_PCT = limits::LOSS_WARNING_PCT;
        LOSS_CRITICAL_PCT = limits::LOSS_CRITICAL_PCT;
        LOSS_MIN_LOST = limits::LOSS_MIN_LOST;
        JITTER_WARNING_MS = limits::JITTER_WARNING_MS;
        JITTER_CRITICAL_MS = limits::JITTER_CRITICAL_MS;
        SKIP = limits::SKIP;
    }
}

section! {
    /// `[diff]`.
    diff, "[diff]", "in [diff]" {
        P50_PCT = like(num("p50_pct", 10.0, AT_LEAST_0, "a p50 change must exceed this share of the baseline, in percent"), "10");
        P50_MS = like(num("p50_ms", 2.0, AT_LEAST_0, "... and this many milliseconds"), "2");
        P95_PCT = like(num("p95_pct", 20.0, AT_LEAST_0, "the same for p95"), "20");
        P95_MS = like(num("p95_ms", 5.0, AT_LEAST_0, "... and this many milliseconds"), "5");
        P99_PCT = like(num("p99_pct", 25.0, AT_LEAST_0, "the same for p99"), "25");
        P99_MS = like(num("p99_ms", 10.0, AT_LEAST_0, "... and this many milliseconds"), "10");
        LOSS_PP = like(num("loss_pp", 0.5, PERCENT, "a loss change must exceed this many percentage points"), "0.5");
        ALPHA = like(num("alpha", 0.01, Range::Between(0.0, 0.5, "0.01"), "significance level of the whole diff"), "0.01");
    }
}

section! {
    /// `[schedule]`.
    schedule, "[schedule]", "in [schedule]" {
        EVERY = dur("every", Default::Unset, Range::Period, "sweep at whole multiples of this period on the UTC clock");
        CRON = text("cron", r#""*/5 * * * *""#, "or sweep at the times of this cron expression (UTC)");
        JITTER = dur("jitter", Default::Text("0s"), Range::Any, "wait a random time up to this long before each sweep");
        KEEP = like(key("keep", Kind::Integer, Default::Unset, Range::Whole(1, 1_000_000), "", "keep at most this many runs"), "100");
        KEEP_FOR = dur("keep_for", Default::Unset, Range::Positive, "delete runs older than this");
    }
}

/// Every table, for the docs check.
pub const SECTIONS: &[Section] = &[
    probe::SECTION,
    region::SECTION,
    location::SECTION,
    lab::SECTION,
    fault::SECTION,
    thresholds::SECTION,
    pair::SECTION,
    diff::SECTION,
    schedule::SECTION,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_say_what_to_use() {
        assert_eq!(diff::ALPHA.range.number(0.01), None);
        for bad in [0.0, 0.5, 0.7, f64::NAN, f64::INFINITY] {
            assert_eq!(
                diff::ALPHA.range.number(bad).as_deref(),
                Some("is out of range; use a number above 0 and below 0.5, like 0.01"),
                "{bad}"
            );
        }
        assert_eq!(
            diff::ALPHA.check_number(0.7),
            Err("--alpha is out of range; use a number above 0 and below 0.5, like 0.01".into())
        );
        assert_eq!(
            thresholds::REGION_MIN_PATHS.range.integer(0).as_deref(),
            Some("is out of range; use a whole number from 1 to 4294967295")
        );
        assert_eq!(
            lab::SEED.range.integer(-1).as_deref(),
            Some("is out of range; use a whole number >= 0")
        );
        for (d, ok) in [
            ("1s", true),
            ("5m", true),
            ("1500ms", false),
            ("500ms", false),
        ] {
            let d = humantime::parse_duration(d).unwrap();
            assert_eq!(schedule::EVERY.check_duration(d).is_ok(), ok, "{d:?}");
        }
        assert!(
            schedule::EVERY
                .check_duration(Duration::from_millis(1500))
                .unwrap_err()
                .starts_with("--every must be whole seconds, at least 1s (got 1s 500ms)")
        );
        assert_eq!(schedule::KEEP_FOR.flag(), "--keep-for");
    }

    /// The cells of the first table row of `doc` whose first cell names `key`.
    fn row<'d>(doc: &'d str, key: &str) -> Option<Vec<&'d str>> {
        let named = format!("`{key}`");
        doc.lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.split('|').map(str::trim).skip(1).collect::<Vec<_>>())
            .find(|cells| {
                cells
                    .first()
                    .is_some_and(|c| c.split(", ").any(|k| k == named))
            })
    }

    /// docs/config.md names every key in the table of its section, with its default.
    #[test]
    fn the_docs_name_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
        let docs = std::fs::read_to_string(&path).expect("docs/config.md");
        let mut missing = Vec::new();
        for section in SECTIONS {
            // A table's section runs from its heading to the next one; `location` is
            // described within [[region]].
            let heading = match section.header {
                "location" => "## `[[region]]`".to_string(),
                h => format!("## `{h}`"),
            };
            let Some(start) = docs.find(&heading) else {
                missing.push(format!("no section {heading}"));
                continue;
            };
            let rest = &docs[start + heading.len()..];
            let doc = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
            for k in section.keys {
                if matches!(k.kind, Kind::Table | Kind::Tables) && section.header != "[[region]]" {
                    continue; // Nested tables have sections of their own.
                }
                if section.header == "location" {
                    if !doc.contains(&format!("`{}`", k.name)) && !doc.contains("{ lat, lon }") {
                        missing.push(format!("{}: {}", section.header, k.name));
                    }
                    continue;
                }
                let Some(cells) = row(doc, k.name) else {
                    missing.push(format!("{}: no row for {}", section.header, k.name));
                    continue;
                };
                // A row naming several keys (the limits of a pair rule) gives no default.
                if cells[0].contains(", ") {
                    continue;
                }
                let ticked: Vec<&str> = cells
                    .iter()
                    .skip(1)
                    .flat_map(|c| c.split('`').skip(1).step_by(2))
                    .collect();
                let shown = match k.default {
                    Default::Number(v) => ticked.iter().any(|t| t.parse::<f64>() == Ok(v)),
                    Default::Integer(v) => ticked.iter().any(|t| t.parse::<i128>() == Ok(v)),
                    Default::Bool(b) => ticked.contains(&b.to_string().as_str()),
                    Default::Text(t) => ticked.contains(&format!("\"{t}\"").as_str()),
                    Default::Unset => true,
                };
                if !shown {
                    missing.push(format!(
                        "{}: the row of {} does not give its default {:?}",
                        section.header, k.name, k.default
                    ));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs/config.md is behind the keys:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn names_are_unique_and_examples_are_given() {
        for s in SECTIONS.iter().chain([&top::SECTION]) {
            let names = s.names();
            for (i, n) in names.iter().enumerate() {
                assert!(!names[..i].contains(n), "{n} twice in {}", s.header);
            }
            for k in s.keys {
                let needs_example = !matches!(k.kind, Kind::Table | Kind::Tables);
                assert!(
                    !needs_example || !k.example.is_empty(),
                    "{}: no example",
                    k.name
                );
            }
        }
    }
}
