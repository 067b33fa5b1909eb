//! What a run must satisfy to be believed: the checks of a region report (its paths'
//! numbers against their samples, names, coordinates) over the whole run, and that
//! every path, prober and finding names regions the run lists. `Run::read` applies
//! them, so every command that reads a run refuses a forged or corrupt one.

use std::collections::HashSet;

use crate::report::{Invalid, check_regions, prober_quantiles};

use super::{Anomaly, Run, Subject};

/// The longest run id, in characters.
pub const MAX_ID_LEN: usize = 128;

impl Run {
    /// Checks every value of the run; the error names the field.
    pub fn check(&self) -> Result<(), Invalid> {
        self.check_with(true)
    }

    /// [`Run::check`] for a run read without its samples (see
    /// `report::without_samples`): the paths get the checks that need no samples.
    pub fn check_without_samples(&self) -> Result<(), Invalid> {
        self.check_with(false)
    }

    fn check_with(&self, samples: bool) -> Result<(), Invalid> {
        if self.id.is_empty() || self.id.chars().count() > MAX_ID_LEN {
            return Err(Invalid::new(
                "id",
                format!("a run id has 1 to {MAX_ID_LEN} characters"),
            ));
        }
        if let Some(c) = self
            .id
            .chars()
            .find(|&c| c.is_control() || crate::config::is_bidi_control(c))
        {
            return Err(Invalid::new(
                "id",
                format!("the run id contains the control character {c:?}"),
            ));
        }
        if self.finished_at < self.started_at {
            return Err(Invalid::new(
                "finished_at",
                format!(
                    "the run finished ({}) before it started ({})",
                    self.finished_at, self.started_at
                ),
            ));
        }
        let names = check_regions(
            self.regions
                .iter()
                .map(|r| (r.name.as_str(), r.location.as_ref())),
            "regions",
        )?;
        let reported: HashSet<&str> = self
            .regions
            .iter()
            .filter(|r| r.reported)
            .map(|r| r.name.as_str())
            .collect();
        for (name, health) in &self.probers {
            if !reported.contains(name.as_str()) {
                return Err(Invalid::new(
                    format!("probers.{name}"),
                    format!("{name:?} is not a region of the run that reported"),
                ));
            }
            prober_quantiles(health, &format!("probers.{name}"))?;
        }
        for (i, p) in self.paths.iter().enumerate() {
            let at = format!("paths[{i}]");
            if !reported.contains(p.source.as_str()) {
                let why = if names.contains(p.source.as_str()) {
                    "did not report (\"reported\": false), so it has no paths"
                } else {
                    "is not among the run's regions"
                };
                return Err(Invalid::new(
                    format!("{at}.source"),
                    format!("region {} {why}", crate::config::quote(&p.source)),
                ));
            }
            if !names.contains(p.target.as_str()) {
                return Err(Invalid::new(
                    format!("{at}.target"),
                    format!(
                        "region {} is not among the run's regions",
                        crate::config::quote(&p.target)
                    ),
                ));
            }
            if samples {
                p.check(&at)?;
            } else {
                p.check_without_samples(&at)?;
            }
        }
        if let Some(i) = crate::report::first_duplicate(&self.paths) {
            let p = &self.paths[i];
            return Err(Invalid::new(
                format!("paths[{i}]"),
                format!(
                    "the path {} → {} ({}, {}) is in the run twice",
                    p.source, p.target, p.kind, p.target_spec
                ),
            ));
        }
        for (i, a) in self.anomalies.iter().enumerate() {
            anomaly(a, &format!("anomalies[{i}]"), &names, 0)?;
        }
        Ok(())
    }

    /// Checks that every region of the run is one of `known` (a configuration's
    /// fleet), for commands given `--config`.
    pub fn check_fleet(&self, known: &[String]) -> Result<(), Invalid> {
        let fleet: HashSet<&str> = known.iter().map(String::as_str).collect();
        for (i, r) in self.regions.iter().enumerate() {
            if !fleet.contains(r.name.as_str()) {
                return Err(Invalid::new(
                    format!("regions[{i}].name"),
                    format!(
                        "region {} is not in the configuration (its regions: {}); pass the configuration the run was made with, or leave out --config",
                        crate::config::quote(&r.name),
                        crate::report::name_list(known)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Findings nest once (a region finding explains path findings); deeper is forged.
const MAX_NESTING: usize = 2;

fn anomaly(a: &Anomaly, at: &str, names: &HashSet<&str>, depth: usize) -> Result<(), Invalid> {
    if depth >= MAX_NESTING {
        return Err(Invalid::new(
            at,
            "findings nest at most once (a region finding and the path findings it explains)",
        ));
    }
    for (f, v) in [("value", a.value), ("threshold", a.threshold)] {
        if !v.is_finite() {
            return Err(Invalid::new(
                format!("{at}.{f}"),
                format!("{v} is not a measured quantity"),
            ));
        }
    }
    let known = |n: &str, f: &str| {
        if names.contains(n) {
            Ok(())
        } else {
            Err(Invalid::new(
                format!("{at}.{f}"),
                format!(
                    "region {} is not among the run's regions",
                    crate::config::quote(n)
                ),
            ))
        }
    };
    match &a.subject {
        Subject::Path { source, target } => {
            known(source, "subject.source")?;
            known(target, "subject.target")?;
        }
        Subject::Region { region, .. } => known(region, "subject.region")?,
    }
    if let Some(relay) = &a.relay {
        known(relay, "relay")?;
    }
    for (i, e) in a.explains.iter().enumerate() {
        anomaly(e, &format!("{at}.explains[{i}]"), names, depth + 1)?;
    }
    Ok(())
}
