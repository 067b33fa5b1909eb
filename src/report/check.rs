//! What a path entry, a region report and a region list must satisfy to be believed:
//! the checks every reader applies where numbers enter latmap (a push, a file,
//! `aggregate`), so that a forged or corrupt file is refused, never published.
//!
//! The statistics are recomputed from `samples_us` and compared; the counts must add
//! up (`received ≤ sent`, `sent + send_failed` samples); ratios lie in [0, 1]; every
//! RTT is at most the longest probe timeout; names follow the one region-name rule and
//! every path's regions are listed. Fields this version does not know are not looked
//! at, so newer files stay readable. Pure functions; the error names the field.

use std::collections::HashSet;

pub use crate::artifact::Invalid;
use crate::config::{Location, MAX_REGIONS, MAX_TIMEOUT, RegionName};
use crate::stats::RttSummary;

use super::{PathEntry, RegionInfo, RegionReport, loss_fields};

/// The longest RTT a sample can hold, in microseconds: a reply later than the probe
/// timeout is counted late, not sampled, and no timeout is longer than this.
pub const MAX_SAMPLE_US: u64 = MAX_TIMEOUT.as_micros() as u64;

/// The longest name resolution recorded, in microseconds (ten minutes).
pub const MAX_RESOLVE_US: u64 = 600_000_000;

/// The longest target spec or address, in bytes (a 253-byte hostname and a port).
pub const MAX_TARGET_LEN: usize = 300;

/// Ratios recomputed here may differ from the file's by rounding only.
const RATIO_TOLERANCE: f64 = 1e-6;

/// The Wilson interval is recomputed with this tolerance (rounded to 6 digits, and
/// computed in floating point by whichever version wrote the file).
const CI_TOLERANCE: f64 = 1e-5;

/// Checks a region name against the one rule of `latmap check`.
pub fn name(value: &str, field: &str) -> Result<(), Invalid> {
    match RegionName::problem(value) {
        Some(problem) => Err(Invalid::new(field, problem)),
        None => Ok(()),
    }
}

/// Checks coordinates.
pub fn location(value: &Location, field: &str) -> Result<(), Invalid> {
    match value.problem() {
        Some(problem) => Err(Invalid::new(field, problem)),
        None => Ok(()),
    }
}

/// Checks a list of regions (names valid and unique, coordinates on Earth); returns
/// the set of names.
pub fn regions<'a>(
    list: impl Iterator<Item = (&'a str, Option<&'a Location>)>,
    field: &str,
) -> Result<HashSet<&'a str>, Invalid> {
    let mut names = HashSet::new();
    for (i, (n, loc)) in list.enumerate() {
        if i == MAX_REGIONS {
            return Err(Invalid::new(
                format!("{field}[{i}]"),
                format!(
                    "more than {MAX_REGIONS} regions are listed; latmap maps fleets of at most {MAX_REGIONS} regions"
                ),
            ));
        }
        // The field is named only when something is wrong (a fleet lists its regions
        // in every report: this runs a million times for a thousand regions).
        if let Some(problem) = RegionName::problem(n) {
            return Err(Invalid::new(format!("{field}[{i}].name"), problem));
        }
        if !names.insert(n) {
            return Err(Invalid::new(
                format!("{field}[{i}].name"),
                format!("region {n:?} is listed twice"),
            ));
        }
        if let Some(problem) = loc.and_then(Location::problem) {
            return Err(Invalid::new(format!("{field}[{i}].location"), problem));
        }
    }
    Ok(names)
}

/// Text from outside that names something (a target, an address): not empty, not
/// longer than [`MAX_TARGET_LEN`], no control characters.
fn target_text(value: &str, field: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if value.len() > MAX_TARGET_LEN {
        return Err(Invalid::new(
            field,
            format!(
                "is {} bytes long; a target is at most {MAX_TARGET_LEN}",
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() || crate::config::is_bidi_control(c))
    {
        return Err(Invalid::new(
            field,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

impl PathEntry {
    /// Checks the path's numbers against each other and against its samples; `at` is
    /// the field of the path (`paths[3]`). The regions are checked by the caller.
    pub fn check(&self, at: &str) -> Result<(), Invalid> {
        self.check_with(at, true)
    }

    /// The checks of [`PathEntry::check`] that need no samples, for an entry read
    /// without them (the aggregator's own runs, drawn and listed): the counts, the
    /// loss and its interval recomputed from them, and the order and range of the RTT
    /// statistics.
    pub fn check_without_samples(&self, at: &str) -> Result<(), Invalid> {
        self.check_with(at, false)
    }

    fn check_with(&self, at: &str, samples: bool) -> Result<(), Invalid> {
        let field = |f: &str| format!("{at}.{f}");
        let what = || {
            format!(
                "the path {} → {} ({}, {})",
                self.source, self.target, self.kind, self.target_spec
            )
        };
        let bad = |f: &str, problem: String| Err(Invalid::new(field(f), problem));
        target_text(&self.target_spec, &field("target_spec"))?;
        if let Some(a) = &self.address {
            target_text(a, &field("address"))?;
        }
        if let Some(us) = self.resolve_us.filter(|&us| us > MAX_RESOLVE_US) {
            return bad(
                "resolve_us",
                format!("{us} µs is longer than any name resolution takes ({MAX_RESOLVE_US} µs)"),
            );
        }
        if !samples {
            return self.check_counts(at, &what, true);
        }
        if let Some((i, us)) = self
            .samples_us
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.filter(|&us| us > MAX_SAMPLE_US).map(|us| (i, us)))
        {
            return bad(
                &format!("samples_us[{i}]"),
                format!(
                    "an RTT of {us} µs is longer than the longest probe timeout ({MAX_SAMPLE_US} µs); a reply that late is counted late, not sampled"
                ),
            );
        }
        let probes = u128::from(self.sent) + u128::from(self.send_failed);
        if probes != self.samples_us.len() as u128 {
            return bad(
                "sent",
                format!(
                    "sent ({}) and send_failed ({}) must add up to the {} entries of samples_us in {}",
                    self.sent,
                    self.send_failed,
                    self.samples_us.len(),
                    what()
                ),
            );
        }
        let replies = self.samples_us.iter().flatten().count() as u64;
        if self.received != replies {
            return bad(
                "received",
                format!(
                    "received is {} but samples_us holds {replies} replies in {}",
                    self.received,
                    what()
                ),
            );
        }
        // The statistics are compared with the samples below.
        self.check_counts(at, &what, false)?;
        let want = RttSummary::from_samples(&self.samples_us);
        match (&self.rtt_us, &want) {
            (None, None) => {}
            (Some(found), Some(want)) => {
                for (name, f, w) in [
                    ("min", found.min, want.min),
                    ("p50", found.p50, want.p50),
                    ("mean", found.mean, want.mean),
                    ("p90", found.p90, want.p90),
                    ("p95", found.p95, want.p95),
                    ("p99", found.p99, want.p99),
                    ("max", found.max, want.max),
                    ("stddev", found.stddev, want.stddev),
                    ("jitter", found.jitter, want.jitter),
                ] {
                    // Rounding to whole microseconds may differ by one.
                    if f.abs_diff(w) > 1 {
                        return bad(
                            &format!("rtt_us.{name}"),
                            format!("{name} is {f} µs but the samples give {w} µs in {}", what()),
                        );
                    }
                }
            }
            (Some(_), None) => {
                return bad(
                    "rtt_us",
                    format!(
                        "has RTT statistics but samples_us holds no reply in {}",
                        what()
                    ),
                );
            }
            (None, Some(_)) => {
                return bad(
                    "rtt_us",
                    format!(
                        "is null but samples_us holds {replies} replies in {}",
                        what()
                    ),
                );
            }
        }
        Ok(())
    }
}

impl PathEntry {
    /// The checks that need only the counts: received ≤ sent, errors and retries
    /// within them, the loss and its interval as the counts give them, and (with
    /// `statistics`) RTT statistics in order, in range and present exactly when
    /// something came back.
    fn check_counts(
        &self,
        at: &str,
        what: &dyn Fn() -> String,
        statistics: bool,
    ) -> Result<(), Invalid> {
        let field = |f: &str| format!("{at}.{f}");
        let bad = |f: &str, problem: String| Err(Invalid::new(field(f), problem));
        if self.received > self.sent {
            return bad(
                "received",
                format!(
                    "received ({}) is more than sent ({}) in {}",
                    self.received,
                    self.sent,
                    what()
                ),
            );
        }
        let unanswered = u128::from(self.sent - self.received);
        if u128::from(self.refused) + u128::from(self.icmp_errors) > unanswered {
            return bad(
                "refused",
                format!(
                    "refused ({}) and icmp_errors ({}) are more than the {unanswered} probes without a reply in {}",
                    self.refused,
                    self.icmp_errors,
                    what()
                ),
            );
        }
        let probes = u128::from(self.sent) + u128::from(self.send_failed);
        if u128::from(self.lagged) > probes {
            return bad(
                "lagged",
                format!(
                    "lagged ({}) is more than the {probes} probes of {}",
                    self.lagged,
                    what()
                ),
            );
        }
        if self.syn_retries > self.received {
            return bad(
                "syn_retries",
                format!(
                    "syn_retries ({}) is more than the {} replies in {}",
                    self.syn_retries,
                    self.received,
                    what()
                ),
            );
        }
        if self.resolve_error.is_some() && self.sent > 0 {
            return bad(
                "resolve_error",
                format!(
                    "a target that did not resolve was not probed, yet sent is {} in {}",
                    self.sent,
                    what()
                ),
            );
        }
        let (loss, ci) = loss_fields(self.sent, self.received);
        match (self.loss, loss) {
            (None, None) => {}
            (Some(v), Some(want)) if close(v, want, RATIO_TOLERANCE) => {}
            (found, want) => {
                return bad(
                    "loss",
                    format!(
                        "loss is {} but {} of {} probes were answered, which is a loss of {} in {}",
                        show(found),
                        self.received,
                        self.sent,
                        show(want),
                        what()
                    ),
                );
            }
        }
        match (self.loss_ci, ci) {
            (None, None) => {}
            (Some([lo, hi]), Some([want_lo, want_hi]))
                if close(lo, want_lo, CI_TOLERANCE) && close(hi, want_hi, CI_TOLERANCE) => {}
            (found, want) => {
                let show_ci = |c: Option<[f64; 2]>| {
                    c.map_or_else(|| "null".to_string(), |[a, b]| format!("[{a}, {b}]"))
                };
                return bad(
                    "loss_ci",
                    format!(
                        "loss_ci is {} but {} lost of {} gives the 95% Wilson interval {} in {}",
                        show_ci(found),
                        self.sent - self.received,
                        self.sent,
                        show_ci(want),
                        what()
                    ),
                );
            }
        }
        if !statistics {
            return Ok(());
        }
        match &self.rtt_us {
            None if self.received > 0 => bad(
                "rtt_us",
                format!(
                    "is null but {} replies came back in {}",
                    self.received,
                    what()
                ),
            ),
            Some(_) if self.received == 0 => bad(
                "rtt_us",
                format!("has RTT statistics but no reply came back in {}", what()),
            ),
            Some(r) => {
                let ordered = [r.min, r.p50, r.p90, r.p95, r.p99, r.max];
                if ordered.windows(2).any(|w| w[0] > w[1]) || r.mean < r.min || r.mean > r.max {
                    return bad(
                        "rtt_us",
                        format!(
                            "the statistics are out of order (min {} p50 {} mean {} p90 {} p95 {} p99 {} max {} µs) in {}",
                            r.min,
                            r.p50,
                            r.mean,
                            r.p90,
                            r.p95,
                            r.p99,
                            r.max,
                            what()
                        ),
                    );
                }
                if r.max > MAX_SAMPLE_US {
                    return bad(
                        "rtt_us.max",
                        format!(
                            "{} µs is longer than the longest probe timeout ({MAX_SAMPLE_US} µs) in {}",
                            r.max,
                            what()
                        ),
                    );
                }
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// A ratio as a message shows it: plainly, or in exponent form when far out of range
/// (a forged 1e300 is not printed as 301 digits).
fn show(v: Option<f64>) -> String {
    match v {
        None => "null".to_string(),
        Some(v) if v != 0.0 && !(1e-6..=1e6).contains(&v.abs()) => format!("{v:e}"),
        Some(v) => v.to_string(),
    }
}

impl RegionReport {
    /// Checks everything the report says (see the module's documentation). With
    /// `known`, the fleet of a configuration, every region named must be one of it.
    pub fn check(&self, known: Option<&[String]>) -> Result<(), Invalid> {
        name(&self.region, "region")?;
        if self.finished_at < self.started_at {
            return Err(Invalid::new(
                "finished_at",
                format!(
                    "the sweep finished ({}) before it started ({})",
                    self.finished_at, self.started_at
                ),
            ));
        }
        let listed = regions(
            self.regions
                .iter()
                .map(|r: &RegionInfo| (r.name.as_str(), r.location.as_ref())),
            "regions",
        )?;
        if let Some(known) = known {
            let fleet: HashSet<&str> = known.iter().map(String::as_str).collect();
            for (i, n) in std::iter::once(self.region.as_str())
                .chain(self.regions.iter().map(|r| r.name.as_str()))
                .enumerate()
            {
                if !fleet.contains(n) {
                    let field = if i == 0 {
                        "region".to_string()
                    } else {
                        format!("regions[{}].name", i - 1)
                    };
                    return Err(Invalid::new(
                        field,
                        format!(
                            "region {n:?} is not in the configuration (its regions: {})",
                            list(known)
                        ),
                    ));
                }
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            let at = format!("paths[{i}]");
            if p.source != self.region {
                return Err(Invalid::new(
                    format!("{at}.source"),
                    format!(
                        "the report of region {:?} has a path from {:?}; a region reports only its own paths",
                        self.region, p.source
                    ),
                ));
            }
            if !listed.contains(p.target.as_str()) {
                return Err(Invalid::new(
                    format!("{at}.target"),
                    format!(
                        "region {} is not among the report's regions; list every region probed in \"regions\"",
                        crate::config::quote(&p.target)
                    ),
                ));
            }
            p.check(&at)?;
        }
        prober(&self.prober, &self.paths)?;
        if let Some(i) = first_duplicate(&self.paths) {
            let p = &self.paths[i];
            return Err(Invalid::new(
                format!("paths[{i}]"),
                format!(
                    "the path {} → {} ({}, {}) is in the report twice",
                    p.source, p.target, p.kind, p.target_spec
                ),
            ));
        }
        Ok(())
    }
}

/// The prober's health as a report gives it: quantiles in order
/// ([`prober_quantiles`]), and no more late sends than the report's paths made probes.
fn prober(h: &crate::probe::ProberHealth, paths: &[PathEntry]) -> Result<(), Invalid> {
    prober_quantiles(h, "prober")?;
    let probes: u128 = paths
        .iter()
        .map(|p| u128::from(p.sent) + u128::from(p.send_failed))
        .sum();
    if u128::from(h.lagged_sends) > probes {
        return Err(Invalid::new(
            "prober.lagged_sends",
            format!(
                "lagged_sends ({}) is more than the {probes} probes of the report's paths",
                h.lagged_sends
            ),
        ));
    }
    Ok(())
}

/// A prober's send lag and receive gap quantiles are in order (p50 ≤ p99 ≤ max, mean
/// ≤ max), as `at` (`prober`, `probers.REGION`) gives them; for reports and runs.
pub fn prober_quantiles(h: &crate::probe::ProberHealth, at: &str) -> Result<(), Invalid> {
    let order = |fields: &[(&str, u64)]| -> Result<(), Invalid> {
        for w in fields.windows(2) {
            let ((a, x), (b, y)) = (w[0], w[1]);
            if x > y {
                return Err(Invalid::new(
                    format!("{at}.{a}"),
                    format!("{a} ({x}) is more than {b} ({y})"),
                ));
            }
        }
        Ok(())
    };
    order(&[
        ("send_lag_p50_us", h.send_lag_p50_us),
        ("send_lag_p99_us", h.send_lag_p99_us),
        ("send_lag_max_us", h.send_lag_max_us),
    ])?;
    order(&[
        ("send_lag_mean_us", h.send_lag_mean_us),
        ("send_lag_max_us", h.send_lag_max_us),
    ])?;
    order(&[
        ("receive_gap_p50_us", h.receive_gap_p50_us),
        ("receive_gap_p99_us", h.receive_gap_p99_us),
    ])
}

/// The index of a path whose key an earlier path has, if any: the keys' hashes are
/// sorted and equal neighbours compared, so a million paths take milliseconds.
pub fn first_duplicate(paths: &[PathEntry]) -> Option<usize> {
    fn fnv(h: u64, bytes: &[u8]) -> u64 {
        bytes
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    }
    let mut hashes: Vec<(u64, usize)> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut h = 0xcbf2_9ce4_8422_2325;
            for part in [
                p.source.as_str(),
                p.target.as_str(),
                p.kind.as_str(),
                &p.target_spec,
            ] {
                h = fnv(fnv(h, part.as_bytes()), &[0xff]);
            }
            (h, i)
        })
        .collect();
    hashes.sort_unstable();
    let mut found: Option<usize> = None;
    // Paths of one hash (twins, or a collision someone made on purpose) are sorted
    // by their keys, so that twins are neighbours.
    for group in hashes.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
        let mut idx: Vec<usize> = group.iter().map(|&(_, i)| i).collect();
        idx.sort_unstable_by(|&a, &b| paths[a].key().cmp(&paths[b].key()).then(a.cmp(&b)));
        for w in idx.windows(2) {
            if paths[w[0]].key() == paths[w[1]].key() {
                found = Some(found.map_or(w[1], |f| f.min(w[1])));
            }
        }
    }
    found
}

/// Names for a message: the first few, and how many more.
pub fn list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;
    use crate::probe::ProberHealth;
    use crate::report::REPORT_SCHEMA;

    fn good() -> PathEntry {
        PathEntry::from_samples(
            "a",
            "b",
            ProbeKind::Udp,
            "127.0.0.1:862",
            vec![Some(20_000), None, Some(21_000), Some(19_500)],
        )
    }

    fn field_of(p: &PathEntry) -> String {
        p.check("paths[0]").unwrap_err().field
    }

    #[test]
    fn a_consistent_path_passes() {
        assert_eq!(good().check("p"), Ok(()));
        let none = PathEntry::from_samples("a", "b", ProbeKind::Tcp, "h:1", vec![None; 3]);
        assert_eq!(none.check("p"), Ok(()));
        let empty = PathEntry::from_samples("a", "b", ProbeKind::Icmp, "h", vec![]);
        assert_eq!(empty.check("p"), Ok(()));
    }

    #[test]
    fn impossible_numbers_name_their_field() {
        type Edit = fn(&mut PathEntry);
        let cases: &[(Edit, &str)] = &[
            (
                |p| p.rtt_us.as_mut().unwrap().p50 = 9_000_000_000_000,
                "paths[0].rtt_us.p50",
            ),
            (
                |p| p.rtt_us.as_mut().unwrap().max = 1,
                "paths[0].rtt_us.max",
            ),
            (|p| p.loss = Some(-3.5), "paths[0].loss"),
            (|p| p.loss = Some(1e300), "paths[0].loss"),
            (|p| p.loss = None, "paths[0].loss"),
            (|p| p.loss_ci = Some([5.0, -5.0]), "paths[0].loss_ci"),
            (|p| p.received = 9, "paths[0].received"),
            (|p| p.sent = 2, "paths[0].sent"),
            (|p| p.send_failed = 1, "paths[0].sent"),
            (|p| p.refused = 2, "paths[0].refused"),
            (|p| p.syn_retries = 4, "paths[0].syn_retries"),
            (|p| p.lagged = u64::MAX, "paths[0].lagged"),
            (|p| p.lagged = 5, "paths[0].lagged"),
            (
                |p| p.samples_us[0] = Some(61_000_000),
                "paths[0].samples_us[0]",
            ),
            (|p| p.rtt_us = None, "paths[0].rtt_us"),
            (
                |p| p.target_spec = "a\u{1b}[2J".into(),
                "paths[0].target_spec",
            ),
            (|p| p.target_spec = String::new(), "paths[0].target_spec"),
            (|p| p.address = Some("x".repeat(301)), "paths[0].address"),
            (|p| p.resolve_us = Some(u64::MAX), "paths[0].resolve_us"),
            (
                |p| p.resolve_error = Some("nx".into()),
                "paths[0].resolve_error",
            ),
        ];
        for (edit, field) in cases {
            let mut p = good();
            edit(&mut p);
            assert_eq!(field_of(&p), *field, "{:?}", p.check("paths[0]"));
        }
        // Received above sent, with the samples to match, is still caught.
        let mut p = good();
        p.sent = 2;
        p.send_failed = 2;
        assert_eq!(field_of(&p), "paths[0].received");
        // Rounding by one microsecond is not an error.
        let mut p = good();
        p.rtt_us.as_mut().unwrap().mean += 1;
        assert_eq!(p.check("p"), Ok(()));
    }

    fn report(region: &str, listed: &[&str], targets: &[&str]) -> RegionReport {
        let t = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        RegionReport {
            schema: REPORT_SCHEMA.into(),
            region: region.into(),
            started_at: t,
            finished_at: t,
            regions: listed
                .iter()
                .map(|n| RegionInfo {
                    name: n.to_string(),
                    location: None,
                })
                .collect(),
            prober: ProberHealth::default(),
            paths: targets
                .iter()
                .map(|t| PathEntry::from_samples(region, t, ProbeKind::Udp, "h", vec![Some(5)]))
                .collect(),
        }
    }

    #[test]
    fn entries_read_without_samples_get_the_other_checks() {
        let mut p = good();
        p.samples_us.clear();
        assert_eq!(p.check_without_samples("p"), Ok(()));
        assert!(p.check("p").is_err());
        for edit in [
            (|p: &mut PathEntry| p.rtt_us.as_mut().unwrap().p50 = 9_000_000_000_000)
                as fn(&mut PathEntry),
            |p| p.loss = Some(-3.5),
            |p| p.loss_ci = Some([5.0, -5.0]),
            |p| p.received = 9,
            |p| p.rtt_us = None,
        ] {
            let mut q = p.clone();
            edit(&mut q);
            assert!(q.check_without_samples("p").is_err(), "{q:?}");
        }
    }

    #[test]
    fn reports_name_their_regions() {
        assert_eq!(report("a", &["a", "b"], &["b"]).check(None), Ok(()));
        let e = report("a", &["a"], &["b"]).check(None).unwrap_err();
        assert_eq!(e.field, "paths[0].target");
        let e = report("a", &["a", "a"], &[]).check(None).unwrap_err();
        assert_eq!(e.field, "regions[1].name");
        let e = report("<img src=x>|", &[], &[]).check(None).unwrap_err();
        assert_eq!(e.field, "region");
        let e = report("a", &["a", "b"], &["b", "b"])
            .check(None)
            .unwrap_err();
        assert_eq!(e.field, "paths[1]");
        let known = vec!["a".to_string()];
        let e = report("a", &["a", "b"], &["b"])
            .check(Some(&known))
            .unwrap_err();
        assert_eq!(e.field, "regions[1].name");
        assert!(e.problem.contains("not in the configuration"), "{e}");
        let mut r = report("a", &["a"], &[]);
        r.regions[0].location = Some(Location {
            lat: 91.0,
            lon: 0.0,
        });
        assert_eq!(r.check(None).unwrap_err().field, "regions[0].location");
        let mut r = report("a", &["a"], &[]);
        r.finished_at = r.started_at - chrono::TimeDelta::seconds(1);
        assert_eq!(r.check(None).unwrap_err().field, "finished_at");
        let mut r = report("a", &["a", "b"], &["b"]);
        r.paths[0].source = "b".into();
        assert_eq!(r.check(None).unwrap_err().field, "paths[0].source");
    }

    #[test]
    fn messages_show_numbers_and_names_once() {
        assert_eq!(show(Some(1e300)), "1e300");
        assert_eq!(show(Some(-3.5)), "-3.5");
        assert_eq!(show(Some(0.0)), "0");
        assert_eq!(show(None), "null");
        let e = report("a", &["a"], &["nowhere"]).check(None).unwrap_err();
        assert!(
            e.problem.starts_with("region \"nowhere\" is not among"),
            "{e}"
        );
    }

    #[test]
    fn a_fleet_has_at_most_max_regions() {
        let names: Vec<String> = (0..=MAX_REGIONS).map(|i| format!("r{i}")).collect();
        let listed: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            report("r0", &listed[..MAX_REGIONS], &["r1"]).check(None),
            Ok(())
        );
        let e = report("r0", &listed, &["r1"]).check(None).unwrap_err();
        assert_eq!(e.field, format!("regions[{MAX_REGIONS}]"));
        assert!(e.problem.contains("at most 1000 regions"), "{e}");
    }

    #[test]
    fn the_probers_health_is_consistent() {
        let good = report("a", &["a", "b"], &["b"]);
        type Edit = fn(&mut ProberHealth);
        let cases: &[(Edit, &str)] = &[
            (|h| h.send_lag_p50_us = 10, "prober.send_lag_p50_us"),
            (|h| h.send_lag_p99_us = 10, "prober.send_lag_p99_us"),
            (|h| h.send_lag_mean_us = 10, "prober.send_lag_mean_us"),
            (|h| h.receive_gap_p50_us = 10, "prober.receive_gap_p50_us"),
            // One path of one probe: at most one late send.
            (|h| h.lagged_sends = 2, "prober.lagged_sends"),
            (|h| h.lagged_sends = u64::MAX, "prober.lagged_sends"),
        ];
        for (edit, field) in cases {
            let mut r = good.clone();
            edit(&mut r.prober);
            assert_eq!(r.check(None).unwrap_err().field, *field);
        }
        let mut r = good.clone();
        r.prober.lagged_sends = 1;
        r.prober.send_lag_p50_us = 10;
        r.prober.send_lag_p99_us = 20;
        r.prober.send_lag_max_us = 20;
        r.prober.send_lag_mean_us = 12;
        assert_eq!(r.check(None), Ok(()));
    }
}
