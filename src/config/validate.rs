//! Meaning of `[probe]` and `[[region]]`: ranges, durations, names, targets.
//!
//! Pure functions from the raw values (`raw`) to the typed settings, each
//! pushing every problem it finds and returning its best result so that later checks
//! can still run. What depends on `[lab]` (matrices, locations, faults) is in
//! `lab`. No file input here.

use std::collections::HashMap;
use std::net::IpAddr;

use super::diag::LineIndex;
use super::keys::{location as loc, probe as keys, region as reg};
use super::raw::{At, Problem, RawConfig, RawRegion, Span, Table};
use super::suggest::{closest, list};
use super::{Host, Location, MAX_REGIONS, ProbeKind, ProbeSettings, Region, RegionName, Target};

/// A region that passed its own checks, with where its name is.
#[derive(Debug, Clone)]
pub(super) struct CheckedRegion {
    pub region: Region,
    pub name_span: Span,
    /// Whether the entry has a `location` key (even an unusable one, reported by itself).
    pub location_key: bool,
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
pub(super) fn probe(raw: Option<&Table>, lab: LabKinds, out: &mut Vec<Problem>) -> ProbeSettings {
    let mut settings = ProbeSettings::default();
    if lab != LabKinds::NoLab {
        settings.kinds = vec![ProbeKind::Udp];
    }
    let Some(raw) = raw else { return settings };
    if let Some(kinds) = raw.texts(&keys::KINDS) {
        let parsed = probe_kinds(&kinds, out);
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
    // The values are in their ranges (checked as they were read).
    if let Some(n) = raw
        .integer(&keys::COUNT)
        .and_then(|c| u32::try_from(c.value).ok())
    {
        settings.count = n;
    }
    // An interval of 0 is allowed: rounds follow each other as fast as `gap` allows.
    for (k, to) in [
        (&keys::INTERVAL, &mut settings.interval),
        (&keys::GAP, &mut settings.gap),
        (&keys::TIMEOUT, &mut settings.timeout),
    ] {
        if let Some(d) = raw.duration(k) {
            *to = d.value;
        }
    }
    settings.payload = raw
        .integer(&keys::PAYLOAD)
        .and_then(|p| usize::try_from(p.value).ok());
    settings
}

/// The kinds listed, or `None` if any is wrong (each problem reported).
fn probe_kinds(kinds: &At<&[At<String>]>, out: &mut Vec<Problem>) -> Option<Vec<ProbeKind>> {
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
    for item in kinds.value {
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
    for (i, r) in raw.regions.iter().enumerate() {
        let t = &r.table;
        if i == MAX_REGIONS {
            out.push(Problem::new(
                t.span.clone(),
                format!(
                    "this is region number {}; a fleet holds at most {MAX_REGIONS} regions, so remove {} of them",
                    i + 1,
                    raw.regions.len() - MAX_REGIONS
                ),
            ));
        }
        let name = match t.text(&reg::NAME) {
            None => {
                if !t.is_broken(&reg::NAME) {
                    out.push(Problem::new(
                        t.span.clone(),
                        "this region has no name; add name = \"...\"",
                    ));
                }
                None
            }
            Some(name) => {
                if let Some(why) = RegionName::problem(name.value) {
                    out.push(Problem::new(name.span.clone(), why));
                    None
                } else if let Some(&first) = first_seen.get(name.value) {
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
                    first_seen.insert(name.value, name.span.start);
                    Some(name)
                }
            }
        };
        let label = t.text(&reg::NAME).map_or_else(
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
                    name: name.value.to_string(),
                    location,
                    targets,
                    source,
                },
                name_span: name.span.clone(),
                location_key: r.location.is_some() || t.is_broken(&reg::LOCATION),
            });
        }
    }
    checked
}

fn location(raw: &Table, out: &mut Vec<Problem>) -> Option<Location> {
    let lat = raw.number(&loc::LAT).map(|v| v.value);
    let lon = raw.number(&loc::LON).map(|v| v.value);
    let broken = raw.is_broken(&loc::LAT) || raw.is_broken(&loc::LON);
    if (lat.is_none() || lon.is_none()) && !broken {
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
    if let Some(t) = r.table.texts(&reg::TARGETS) {
        out.push(Problem::new(
            t.key.clone(),
            "targets in a lab region: the lab gives each region its own 127.0.N.1 address; remove it",
        ));
    }
    if let Some(s) = r.table.text(&reg::SOURCE) {
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
    let t = &r.table;
    let Some(raw) = t.texts(&reg::TARGETS) else {
        if !t.is_broken(&reg::TARGETS) && !lab_unsure {
            let span = t
                .text(&reg::NAME)
                .map_or_else(|| t.span.clone(), |n| n.span.clone());
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
    for item in raw.value {
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
    let s = r.table.text(&reg::SOURCE)?;
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
