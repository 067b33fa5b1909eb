//! Meaning of `[probe]` and `[[region]]`: ranges, durations, names, targets.
//!
//! Pure functions from the raw values (`raw`) to the typed settings, each
//! pushing every problem it finds and returning its best result so that later checks
//! can still run. What depends on `[lab]` (matrices, locations, faults) is in
//! `lab`. No file input here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use humantime::DurationError;

use super::load::LineIndex;
use super::raw::{At, Problem, RawConfig, RawProbe, RawRegion, Span};
use super::suggest::{closest, list};
use super::{Host, Location, ProbeKind, ProbeSettings, Region, Target};

/// Longest region name.
pub(super) const MAX_NAME_LEN: usize = 63;
/// Most probes per path per sweep.
pub const MAX_COUNT: i128 = 1_000_000;
/// Largest payload, in bytes (fits a 1500-byte MTU with IPv6 and STAMP headers).
pub const MAX_PAYLOAD: i128 = 1400;
/// Longest probe timeout: no reply can take longer, so no RTT sample can either.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// A region that passed its own checks, with where its name is.
#[derive(Debug, Clone)]
pub(super) struct CheckedRegion {
    pub region: Region,
    pub name_span: Span,
    /// Whether the entry has a `location` key (even an unusable one, reported by itself).
    pub location_key: bool,
}

/// Characters a region name may not contain: they would break file names
/// (`REGION.json`), CSV cells or Markdown tables.
const NAME_FORBIDDEN: &[char] = &['/', '\\', '|', ',', '"'];

/// Longest region name in bytes of UTF-8: the name is a file name on the aggregator
/// (`REGION.json`, and a temporary file beside it), which Linux limits to 255 bytes.
const MAX_NAME_BYTES: usize = 200;

/// Characters that reorder the text around them when shown (bidirectional overrides,
/// embeddings, isolates and marks): a name holding one would read differently from
/// what it is. Region names may not hold them; outputs escape them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Why `name` cannot be a region name, if it cannot. Names are kebab-case by
/// convention (`eu-west-1`), but any readable name is allowed, so that a published
/// matrix whose header says `Europe (Ireland)` works as it is. This is the one rule
/// for region names: the configuration, region reports, runs and the aggregator's
/// pushes all apply it.
pub fn region_name_problem(name: &str) -> Option<String> {
    let allowed = "1 to 63 characters, no control characters and none of / \\ | , \", not starting with '-' or '.' or a space";
    if name.is_empty() {
        return Some(format!("a region name is empty; use {allowed}"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Some(format!(
            "region name {} is longer than {MAX_NAME_LEN} characters; shorten it",
            super::load::quote(name)
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "region name {name:?} is longer than {MAX_NAME_BYTES} bytes of UTF-8; shorten it"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || is_bidi_control(c) || NAME_FORBIDDEN.contains(&c))
    {
        return Some(format!(
            "region name {name:?} contains {c:?}; use {allowed}"
        ));
    }
    if name.starts_with(['-', '.'])
        || name.starts_with(char::is_whitespace)
        || name.ends_with(char::is_whitespace)
    {
        return Some(format!(
            "region name {name:?} starts or ends with {:?}; use {allowed}",
            if name.ends_with(char::is_whitespace) {
                ' '
            } else {
                name.chars().next().unwrap_or(' ')
            }
        ));
    }
    None
}

/// What a `[lab]` allows of `[probe] kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LabKinds {
    /// No lab: any kind.
    NoLab,
    /// The loopback lab: `udp` only.
    UdpOnly,
    /// The netns lab: any kind.
    Any,
    /// The lab's mode is unusable (reported by itself): kinds are not judged.
    Unknown,
}

/// `[probe]`, with defaults. In a lab the kinds default to `udp`, and the loopback lab
/// allows nothing else.
pub(super) fn probe(
    raw: Option<&RawProbe>,
    lab: LabKinds,
    out: &mut Vec<Problem>,
) -> ProbeSettings {
    let mut settings = ProbeSettings::default();
    if lab != LabKinds::NoLab {
        settings.kinds = vec![ProbeKind::Udp];
    }
    let Some(raw) = raw else { return settings };
    if let Some(kinds) = &raw.kinds {
        let parsed = probe_kinds(kinds, out);
        match lab {
            LabKinds::UdpOnly => {
                // Unknown kinds, duplicates and empty lists are reported by `probe_kinds`.
                let other = |k: &At<String>| {
                    k.value
                        .parse()
                        .is_ok_and(|k: ProbeKind| k != ProbeKind::Udp)
                };
                if kinds.value.iter().any(other) {
                    out.push(Problem::new(
                        kinds.span.clone(),
                        "the lab emulates only udp probes in loopback mode; set kinds = [\"udp\"] or remove the key, \
                         or set mode = \"netns\" in [lab] (needs root) to emulate icmp and tcp too",
                    ));
                }
            }
            LabKinds::Unknown => {}
            LabKinds::NoLab | LabKinds::Any => {
                if let Some(parsed) = parsed {
                    settings.kinds = parsed;
                }
            }
        }
    }
    if let Some(count) = &raw.count
        && let Some(n) = int_in(count, "count", 1, MAX_COUNT, out)
    {
        settings.count = u32::try_from(n).unwrap_or(settings.count);
    }
    if let Some(interval) = &raw.interval {
        // 0 is allowed: rounds follow each other as fast as `gap` allows.
        if let Some(d) = duration(interval, "interval", out) {
            settings.interval = d;
        }
    }
    if let Some(d) = raw.gap.as_ref().and_then(|d| duration(d, "gap", out)) {
        settings.gap = d;
    }
    if let Some(timeout) = &raw.timeout {
        match duration(timeout, "timeout", out) {
            Some(d) if d.is_zero() || d > MAX_TIMEOUT => out.push(Problem::new(
                timeout.span.clone(),
                "timeout is out of range; use a duration above 0 and at most \"60s\"",
            )),
            Some(d) => settings.timeout = d,
            None => {}
        }
    }
    if let Some(payload) = &raw.payload
        && let Some(n) = int_in(payload, "payload", 0, MAX_PAYLOAD, out)
    {
        settings.payload = usize::try_from(n).ok();
    }
    settings
}

/// The kinds listed, or `None` if any is wrong (each problem reported).
fn probe_kinds(kinds: &At<Vec<At<String>>>, out: &mut Vec<Problem>) -> Option<Vec<ProbeKind>> {
    if kinds.value.is_empty() {
        out.push(Problem::new(
            kinds.span.clone(),
            "kinds is empty; list at least one of \"icmp\", \"udp\" and \"tcp\", or remove the key for the default",
        ));
        return None;
    }
    let names: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut parsed = Vec::new();
    let mut ok = true;
    for item in &kinds.value {
        match item.value.parse::<ProbeKind>() {
            Ok(kind) if parsed.contains(&kind) => {
                ok = false;
                out.push(Problem::new(
                    item.span.clone(),
                    format!("probe kind \"{kind}\" is listed twice; remove one"),
                ));
            }
            Ok(kind) => parsed.push(kind),
            Err(_) => {
                ok = false;
                let fix = match closest(&item.value, &names) {
                    Some(best) => format!("did you mean \"{best}\"?"),
                    None => format!("use {}", list(&names)),
                };
                out.push(Problem::new(
                    item.span.clone(),
                    format!("unknown probe kind {:?}; {fix}", item.value),
                ));
            }
        }
    }
    ok.then_some(parsed)
}

/// Parses a humantime duration, reporting a problem in our words if it is not one.
pub(super) fn duration(at: &At<String>, key: &str, out: &mut Vec<Problem>) -> Option<Duration> {
    let text = at.value.as_str();
    let like = "like \"250ms\" or \"1s\"";
    humantime::parse_duration(text)
        .map_err(|e| {
            let message = match e {
                DurationError::Empty => format!("{key} is empty; write a duration {like}"),
                DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                    format!("{key} = {text:?} has no unit; write it like \"{value}ms\" or \"{value}s\"")
                }
                DurationError::UnknownUnit { unit, .. } => {
                    format!("{key} = {text:?} has an unknown unit {unit:?}; use ns, us, ms, s, m or h, {like}")
                }
                DurationError::NumberOverflow => {
                    format!("{key} = {text:?} is too large or too precise; write a duration {like}")
                }
                _ => format!("{key} = {text:?} is not a duration; write a number and a unit, {like}"),
            };
            out.push(Problem::new(at.span.clone(), message));
        })
        .ok()
}

/// An integer in `lo..=hi`, or a problem.
pub(super) fn int_in(
    at: &At<i128>,
    key: &str,
    lo: i128,
    hi: i128,
    out: &mut Vec<Problem>,
) -> Option<i128> {
    if (lo..=hi).contains(&at.value) {
        return Some(at.value);
    }
    // TOML integers are 64-bit: a bound beyond that is no bound.
    let range = if hi >= i128::from(i64::MAX) {
        format!("a whole number >= {lo}")
    } else {
        format!("a whole number from {lo} to {hi}")
    };
    out.push(Problem::new(
        at.span.clone(),
        format!("{key} is out of range; use {range}"),
    ));
    None
}

/// A finite number in `lo..=hi` (`hi` may be infinite for "no upper bound"), or a problem.
pub(super) fn num_in(
    at: &At<f64>,
    key: &str,
    lo: f64,
    hi: f64,
    out: &mut Vec<Problem>,
) -> Option<f64> {
    let v = at.value;
    if v.is_finite() && v >= lo && v <= hi {
        return Some(v);
    }
    let range = if hi.is_infinite() {
        format!("a number >= {lo}")
    } else {
        format!("a number from {lo} to {hi}")
    };
    out.push(Problem::new(
        at.span.clone(),
        format!("{key} is out of range; use {range}"),
    ));
    None
}

/// The `[[region]]` entries: names (valid, unique), locations, targets and sources.
/// Regions without a usable name are left out (their problem is reported).
pub(super) fn regions(
    raw: &RawConfig,
    kinds: &[ProbeKind],
    text: &str,
    out: &mut Vec<Problem>,
) -> Vec<CheckedRegion> {
    let in_lab = raw.lab.is_some();
    // With a misspelt or broken [lab], whether regions need targets is unknown.
    let lab_unsure = raw.broken.contains(&"lab");
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut lines: Option<LineIndex<'_>> = None;
    let mut checked = Vec::new();
    for r in &raw.regions {
        let name = match &r.name {
            None => {
                if !r.broken.contains(&"name") {
                    out.push(Problem::new(
                        r.span.clone(),
                        "this region has no name; add name = \"...\"",
                    ));
                }
                None
            }
            Some(name) => {
                if let Some(why) = region_name_problem(&name.value) {
                    out.push(Problem::new(name.span.clone(), why));
                    None
                } else if let Some(&first) = first_seen.get(name.value.as_str()) {
                    let (line, _) = lines
                        .get_or_insert_with(|| LineIndex::new(text))
                        .line_col(first);
                    out.push(Problem::new(
                        name.span.clone(),
                        format!(
                            "region {:?} defined twice (first at line {line}); rename one",
                            name.value
                        ),
                    ));
                    None
                } else {
                    first_seen.insert(&name.value, name.span.start);
                    Some(name)
                }
            }
        };
        let label = r.name.as_ref().map_or_else(
            || "this region".to_string(),
            |n| format!("region {:?}", n.value),
        );
        let location = r.location.as_ref().and_then(|l| location(l, out));
        let (targets, source) = if in_lab {
            lab_region(r, out);
            (Vec::new(), None)
        } else {
            (targets(r, &label, kinds, lab_unsure, out), source(r, out))
        };
        if let Some(name) = name {
            checked.push(CheckedRegion {
                region: Region {
                    name: name.value.clone(),
                    location,
                    targets,
                    source,
                },
                name_span: name.span.clone(),
                location_key: r.location.is_some() || r.broken.contains(&"location"),
            });
        }
    }
    checked
}

fn location(raw: &super::raw::RawLocation, out: &mut Vec<Problem>) -> Option<Location> {
    let lat = raw
        .lat
        .as_ref()
        .and_then(|v| num_in(v, "lat", *Location::LAT.start(), *Location::LAT.end(), out));
    let lon = raw
        .lon
        .as_ref()
        .and_then(|v| num_in(v, "lon", *Location::LON.start(), *Location::LON.end(), out));
    let broken = raw.broken.contains(&"lat") || raw.broken.contains(&"lon");
    if (raw.lat.is_none() || raw.lon.is_none()) && !broken {
        out.push(Problem::new(
            raw.span.clone(),
            "location needs both lat and lon; write it like location = { lat = 38.9, lon = -77.4 }",
        ));
    }
    Some(Location {
        lat: lat?,
        lon: lon?,
    })
}

/// In a lab, a region has no targets or source of its own.
fn lab_region(r: &RawRegion, out: &mut Vec<Problem>) {
    if let Some(t) = &r.targets {
        out.push(Problem::new(
            t.key.clone(),
            "targets in a lab region: the lab gives each region its own 127.0.N.1 address; remove it",
        ));
    }
    if let Some(s) = &r.source {
        out.push(Problem::new(
            s.key.clone(),
            "source in a lab region: the lab gives each region its own 127.0.N.1 address; remove it",
        ));
    }
}

fn targets(
    r: &RawRegion,
    label: &str,
    kinds: &[ProbeKind],
    lab_unsure: bool,
    out: &mut Vec<Problem>,
) -> Vec<Target> {
    let Some(raw) = &r.targets else {
        if !r.broken.contains(&"targets") && !lab_unsure {
            let span = r
                .name
                .as_ref()
                .map_or_else(|| r.span.clone(), |n| n.span.clone());
            out.push(Problem::new(
                span,
                format!(
                    "{label} has no targets; add targets = [\"HOST\", ...], the addresses other regions probe \
                     to reach it"
                ),
            ));
        }
        return Vec::new();
    };
    if raw.value.is_empty() {
        out.push(Problem::new(
            raw.span.clone(),
            format!("{label} has an empty targets list; add at least one address other regions probe to reach it"),
        ));
    }
    let needs_port = kinds.contains(&ProbeKind::Tcp);
    let mut parsed: Vec<Target> = Vec::new();
    for item in &raw.value {
        match Target::parse(&item.value) {
            Err(why) => out.push(Problem::new(
                item.span.clone(),
                format!(
                    "target {:?} is invalid: {why}; write an IP address or a hostname, optionally with :PORT",
                    item.value
                ),
            )),
            Ok(target) => {
                if needs_port && target.port.is_none() {
                    let like = match &target.host {
                        Host::Ip(IpAddr::V6(_)) => format!("[{target}]:443"),
                        _ => format!("{target}:443"),
                    };
                    out.push(Problem::new(
                        item.span.clone(),
                        format!(
                            "target {:?} has no port; tcp probes need a port: write \"HOST:PORT\", like {like:?}",
                            item.value
                        ),
                    ));
                }
                if parsed.contains(&target) {
                    out.push(Problem::new(
                        item.span.clone(),
                        format!("target {:?} is listed twice in {label}; remove one", item.value),
                    ));
                } else {
                    parsed.push(target);
                }
            }
        }
    }
    parsed
}

fn source(r: &RawRegion, out: &mut Vec<Problem>) -> Option<IpAddr> {
    let s = r.source.as_ref()?;
    match s.value.trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            out.push(Problem::new(
                s.span.clone(),
                format!(
                    "source {:?} is not an IP address; write the address this region's prober binds, like \
                     \"10.0.0.5\" or \"2001:db8::5\"",
                    s.value
                ),
            ));
            None
        }
    }
}
