//! Checking `[thresholds]`: ranges, detector ids in `skip`, warning below critical, and
//! the region patterns of `[[thresholds.pair]]` rules against the configured regions.
//!
//! Pure functions from the raw values (`raw`) to [`Thresholds`], pushing every problem
//! found; no file input.

use super::super::RegionName;
use super::super::keys;
use super::super::raw::{At, Problem, RawLimits, RawPair, RawThresholds};
use super::super::suggest::{closest, list};
use super::{DetectorId, DetectorSet, PairRule, PathLimits, RegionPattern, Thresholds};

/// Checks `[thresholds]`; `names` are the configuration's regions when they are known.
/// `None` when a value is unusable (every problem is in `out`).
pub(in crate::config) fn check(
    raw: Option<&RawThresholds>,
    names: Option<&[&str]>,
    out: &mut Vec<Problem>,
) -> Option<Thresholds> {
    let mut t = Thresholds::default();
    let Some(raw) = raw else { return Some(t) };
    let before = out.len();
    let defaults = Thresholds::default();
    // The values are in their ranges (checked as they were read).
    for (v, to) in [
        (&raw.detour_min_pct, &mut t.detour_min_pct),
        (&raw.detour_min_ms, &mut t.detour_min_ms),
        (&raw.inflation_factor, &mut t.inflation_factor),
        (&raw.inflation_min_ms, &mut t.inflation_min_ms),
        (&raw.asymmetry_min_pct, &mut t.asymmetry_min_pct),
        (&raw.asymmetry_min_ms, &mut t.asymmetry_min_ms),
        (&raw.region_min_share, &mut t.region_min_share),
        (&raw.shift_margin_pct, &mut t.shift_margin_pct),
        (&raw.shift_margin_ms, &mut t.shift_margin_ms),
        (&raw.shift_deviations, &mut t.shift_deviations),
    ] {
        if let Some(v) = v {
            *to = v.value;
        }
    }
    for (v, to) in [
        (&raw.region_min_paths, &mut t.region_min_paths),
        (&raw.shift_window, &mut t.shift_window),
        (&raw.shift_min_runs, &mut t.shift_min_runs),
    ] {
        if let Some(n) = v.as_ref().and_then(|v| usize::try_from(v.value).ok()) {
            *to = n;
        }
    }
    if t.shift_min_runs > t.shift_window {
        let at = raw.shift_min_runs.as_ref().or(raw.shift_window.as_ref());
        if let Some(at) = at {
            let (w, m) = (t.shift_window, t.shift_min_runs);
            let default = |raw: &Option<At<i128>>| if raw.is_some() { "" } else { ", the default" };
            out.push(Problem::new(
                at.span.clone(),
                format!(
                    "shift_min_runs ({m}{}) is above shift_window ({w}{}): a path could never be judged; \
                     make shift_min_runs at most shift_window",
                    default(&raw.shift_min_runs),
                    default(&raw.shift_window)
                ),
            ));
        }
    }
    let base = limits(&raw.limits, true, out);
    t.limits = base.apply_to(defaults.limits);
    ordered_pair(&raw.limits, &t.limits, true, out);
    for pair in &raw.pairs {
        if let Some(rule) = pair_rule(pair, names, out) {
            t.pairs.push(rule);
        }
    }
    (out.len() == before).then_some(t)
}

/// What a `limits` table set, checked.
struct Overrides {
    slo_p95_ms: Option<f64>,
    loss_warning_pct: Option<f64>,
    loss_critical_pct: Option<f64>,
    loss_min_lost: Option<u64>,
    jitter_warning_ms: Option<f64>,
    jitter_critical_ms: Option<f64>,
    skip: DetectorSet,
}

impl Overrides {
    fn apply_to(&self, mut limits: PathLimits) -> PathLimits {
        if self.slo_p95_ms.is_some() {
            limits.slo_p95_ms = self.slo_p95_ms;
        }
        limits.loss_warning_pct = self.loss_warning_pct.unwrap_or(limits.loss_warning_pct);
        limits.loss_critical_pct = self.loss_critical_pct.unwrap_or(limits.loss_critical_pct);
        limits.loss_min_lost = self.loss_min_lost.unwrap_or(limits.loss_min_lost);
        limits.jitter_warning_ms = self.jitter_warning_ms.unwrap_or(limits.jitter_warning_ms);
        limits.jitter_critical_ms = self.jitter_critical_ms.unwrap_or(limits.jitter_critical_ms);
        limits.skip = limits.skip.union(self.skip);
        limits
    }
}

fn limits(raw: &RawLimits, fleet: bool, out: &mut Vec<Problem>) -> Overrides {
    let num = |v: &Option<At<f64>>| v.as_ref().map(|v| v.value);
    let slo_p95_ms = num(&raw.slo_p95_ms);
    let loss_min_lost = raw
        .loss_min_lost
        .as_ref()
        .and_then(|n| u64::try_from(n.value).ok());
    Overrides {
        slo_p95_ms,
        loss_warning_pct: num(&raw.loss_warning_pct),
        loss_critical_pct: num(&raw.loss_critical_pct),
        loss_min_lost,
        jitter_warning_ms: num(&raw.jitter_warning_ms),
        jitter_critical_ms: num(&raw.jitter_critical_ms),
        skip: raw
            .skip
            .as_ref()
            .map(|s| skip_list(s, fleet, out))
            .unwrap_or_default(),
    }
}

/// A warning limit above its critical limit in the same table is a mistake.
fn ordered_pair(raw: &RawLimits, effective: &PathLimits, fleet: bool, out: &mut Vec<Problem>) {
    let pairs = [
        (
            "loss_warning_pct",
            &raw.loss_warning_pct,
            effective.loss_warning_pct,
            "loss_critical_pct",
            &raw.loss_critical_pct,
            effective.loss_critical_pct,
        ),
        (
            "jitter_warning_ms",
            &raw.jitter_warning_ms,
            effective.jitter_warning_ms,
            "jitter_critical_ms",
            &raw.jitter_critical_ms,
            effective.jitter_critical_ms,
        ),
    ];
    for (wkey, wraw, w, ckey, craw, c) in pairs {
        // In a pair rule, only a rule that sets both is checked here.
        if !fleet && (wraw.is_none() || craw.is_none()) {
            continue;
        }
        if w <= c || !(w.is_finite() && c.is_finite()) {
            continue;
        }
        let default = |raw: &Option<At<f64>>| if raw.is_some() { "" } else { ", the default" };
        match (wraw, craw) {
            (_, Some(cat)) => out.push(Problem::new(
                cat.span.clone(),
                format!(
                    "{ckey} ({c}) is below {wkey} ({w}{}); make {ckey} at least {wkey}",
                    default(wraw)
                ),
            )),
            (Some(wat), None) => out.push(Problem::new(
                wat.span.clone(),
                format!(
                    "{wkey} ({w}) is above {ckey} ({c}{}); make {wkey} at most {ckey}",
                    default(craw)
                ),
            )),
            (None, None) => {}
        }
    }
}

fn skip_list(raw: &At<Vec<At<String>>>, fleet: bool, out: &mut Vec<Problem>) -> DetectorSet {
    let names: Vec<&str> = DetectorId::ALL.iter().map(|d| d.as_str()).collect();
    let mut set = DetectorSet::default();
    for item in &raw.value {
        match item.value.parse::<DetectorId>() {
            Ok(d) if set.contains(d) => out.push(Problem::new(
                item.span.clone(),
                format!("detector \"{d}\" is listed twice in skip; remove one"),
            )),
            Ok(DetectorId::Region) if !fleet => out.push(Problem::new(
                item.span.clone(),
                "\"region\" judges whole regions, not a pair; to turn it off, list it in \
                 [thresholds] skip",
            )),
            Ok(d) => set.insert(d),
            Err(_) => {
                let fix = match closest(&item.value, &names) {
                    Some(best) => format!("did you mean \"{best}\"?"),
                    None => format!("use {}", list(&names)),
                };
                out.push(Problem::new(
                    item.span.clone(),
                    format!("unknown detector {:?} in skip; {fix}", item.value),
                ));
            }
        }
    }
    set
}

fn pair_rule(raw: &RawPair, names: Option<&[&str]>, out: &mut Vec<Problem>) -> Option<PairRule> {
    let before = out.len();
    let broken = |key| raw.broken.contains(&key);
    if raw.source.is_none() && raw.target.is_none() && !broken("source") && !broken("target") {
        out.push(Problem::new(
            raw.span.clone(),
            "a pair rule needs source, target or both (names or patterns like \"us-*\"); \
             for every pair, set the key in [thresholds] itself",
        ));
    }
    let any_limit = raw.limits.any() || keys::limits::ALL.iter().any(|k| broken(k.name));
    if !any_limit && !raw.unknown_keys {
        out.push(Problem::new(
            raw.span.clone(),
            "this pair rule changes nothing; set slo_p95_ms, a loss_ or jitter_ key, or skip",
        ));
    }
    let source = raw.source.as_ref().map_or(Some(RegionPattern::any()), |p| {
        pattern(p, "source", names, out)
    });
    let target = raw.target.as_ref().map_or(Some(RegionPattern::any()), |p| {
        pattern(p, "target", names, out)
    });
    let o = limits(&raw.limits, false, out);
    let effective = o.apply_to(PathLimits::default());
    ordered_pair(&raw.limits, &effective, false, out);
    let rule = PairRule {
        source: source?,
        target: target?,
        both_directions: raw.both_directions.as_ref().is_some_and(|b| b.value),
        slo_p95_ms: o.slo_p95_ms,
        loss_warning_pct: o.loss_warning_pct,
        loss_critical_pct: o.loss_critical_pct,
        loss_min_lost: o.loss_min_lost,
        jitter_warning_ms: o.jitter_warning_ms,
        jitter_critical_ms: o.jitter_critical_ms,
        skip: o.skip,
    };
    (out.len() == before).then_some(rule)
}

fn pattern(
    raw: &At<String>,
    key: &str,
    names: Option<&[&str]>,
    out: &mut Vec<Problem>,
) -> Option<RegionPattern> {
    let text = raw.value.as_str();
    let plain = text.replace(['*', '?'], "a");
    if text.is_empty() {
        out.push(Problem::new(
            raw.span.clone(),
            format!("{key} is empty; give a region name or a pattern like \"eu-*\""),
        ));
        return None;
    }
    if let Some(why) = RegionName::problem(&plain) {
        out.push(Problem::new(
            raw.span.clone(),
            format!(
                "{key} {text:?} is not a region name or pattern ({why}); use a region name, with * for any characters and ? for one"
            ),
        ));
        return None;
    }
    let pattern = RegionPattern(text.to_string());
    if let Some(names) = names
        && !names.iter().any(|n| pattern.matches(n))
    {
        let message = if pattern.is_glob() {
            format!(
                "{key} pattern {text:?} matches no region; check it against the [[region]] names"
            )
        } else {
            let hint = match closest(text, names) {
                Some(best) => format!("did you mean {best:?}?"),
                None => format!("use one of {}", list(&names[..names.len().min(8)])),
            };
            format!("{key} names an unknown region {text:?}; {hint}")
        };
        out.push(Problem::new(raw.span.clone(), message));
        return None;
    }
    Some(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fleet of three regions with `thresholds` appended.
    fn problems(thresholds: &str) -> Vec<String> {
        let text = format!(
            "{thresholds}\n\n[[region]]\nname = \"us-east-1\"\ntargets = [\"10.0.0.1\"]\n\n\
             [[region]]\nname = \"us-west-2\"\ntargets = [\"10.0.0.2\"]\n\n\
             [[region]]\nname = \"eu-west-1\"\ntargets = [\"10.0.0.3\"]\n"
        );
        match crate::config::parse(&text, std::path::Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn threshold_rules() {
        for (text, want) in [
            ("[thresholds]", None),
            (
                "[thresholds]\nloss_warning_pct = 0.5\nloss_critical_pct = 5",
                None,
            ),
            (
                "[thresholds]\nslo_p95_ms = 150\nskip = [\"asymmetry\", \"jitter\"]",
                None,
            ),
            (
                "[thresholds]\nregion_min_share = 1\nregion_min_paths = 1",
                None,
            ),
            (
                "[thresholds]\nloss_warning_pct = 101",
                Some("t.toml:2:20: loss_warning_pct is out of range; use a number from 0 to 100"),
            ),
            (
                "[thresholds]\nloss_critical_pct = 0.05",
                Some(
                    "loss_critical_pct (0.05) is below loss_warning_pct (0.1, the default); make loss_critical_pct at least loss_warning_pct",
                ),
            ),
            (
                "[thresholds]\njitter_warning_ms = 80",
                Some("jitter_warning_ms (80) is above jitter_critical_ms (50, the default)"),
            ),
            (
                "[thresholds]\nloss_min_lost = 0",
                Some("loss_min_lost is out of range; use a whole number from 1 to"),
            ),
            (
                "[thresholds]\nslo_p95_ms = 0",
                Some("slo_p95_ms is out of range; use a number of milliseconds above 0"),
            ),
            (
                "[thresholds]\ninflation_factor = 0.5",
                Some("inflation_factor is out of range; use a number >= 1"),
            ),
            (
                "[thresholds]\nregion_min_share = 1.5",
                Some("region_min_share is out of range; use a number from 0 to 1"),
            ),
            (
                "[thresholds]\ndetour_min_pct = nan",
                Some("detour_min_pct is out of range"),
            ),
            (
                "[thresholds]\nskip = [\"asymetry\"]",
                Some("unknown detector \"asymetry\" in skip; did you mean \"asymmetry\"?"),
            ),
            (
                "[thresholds]\nskip = [\"loss\", \"loss\"]",
                Some("detector \"loss\" is listed twice in skip"),
            ),
            (
                "[thresholds]\nslo = 100",
                Some("unknown key \"slo\" in [thresholds]; did you mean \"slo_p95_ms\"?"),
            ),
            (
                "[[thresholds]]",
                Some("write [thresholds], not [[thresholds]]"),
            ),
            (
                "thresholds = 3",
                Some("thresholds must be a table, not an integer"),
            ),
            (
                "[thresholds.pair]\nsource = \"us-*\"\nslo_p95_ms = 1",
                Some("pair must be a list of tables"),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\ntarget = \"eu-west-1\"\nslo_p95_ms = 90",
                None,
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-???t-*\"\nboth_directions = true\nskip = [\"asymmetry\"]",
                None,
            ),
            (
                "[[thresholds.pair]]\nslo_p95_ms = 90",
                Some("a pair rule needs source, target or both"),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"",
                Some("this pair rule changes nothing"),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-est-1\"\nslo_p95_ms = 9",
                Some("source names an unknown region \"us-est-1\"; did you mean \"us-east-1\"?"),
            ),
            (
                "[[thresholds.pair]]\ntarget = \"ap-*\"\nslo_p95_ms = 9",
                Some("target pattern \"ap-*\" matches no region"),
            ),
            (
                "[[thresholds.pair]]\ntarget = \"eu|west\"\nslo_p95_ms = 9",
                Some(
                    "target \"eu|west\" is not a region name or pattern (region name \"eu|west\" contains '|'",
                ),
            ),
            (
                "[[thresholds.pair]]\ntarget = \"\"\nslo_p95_ms = 9",
                Some("target is empty"),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\nskip = [\"region\"]",
                Some("\"region\" judges whole regions, not a pair"),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\ndetour_min_pct = 5",
                Some(
                    "unknown key \"detour_min_pct\" in [[thresholds.pair]]; the keys allowed here are",
                ),
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\nloss_warning_pct = 3\nloss_critical_pct = 2",
                Some("loss_critical_pct (2) is below loss_warning_pct (3)"),
            ),
            // Only the critical limit in a rule: checked against nothing (critical is judged first).
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\nloss_critical_pct = 0.05",
                None,
            ),
            (
                "[[thresholds.pair]]\nsource = \"us-*\"\nslo_p95_ms = \"90ms\"",
                Some("slo_p95_ms must be a number, not a string"),
            ),
        ] {
            let got = problems(text);
            match want {
                None => assert!(got.is_empty(), "{text}\nshould load, but: {got:#?}"),
                Some(want) => assert!(
                    got.len() == 1 && got[0].contains(want),
                    "{text}\nwanted one problem containing {want:?}, got {got:#?}"
                ),
            }
        }
    }

    #[test]
    fn thresholds_are_taken() {
        let text = "[[region]]\nname = \"a\"\ntargets = [\"10.0.0.1\"]\n[[region]]\nname = \"b\"\ntargets = [\"10.0.0.2\"]\n\
                    [thresholds]\nloss_warning_pct = 0.2\nloss_critical_pct = 2\nloss_min_lost = 3\nslo_p95_ms = 120\n\
                    detour_min_pct = 10\ndetour_min_ms = 2\ninflation_factor = 2.5\ninflation_min_ms = 1\n\
                    asymmetry_min_pct = 30\nasymmetry_min_ms = 8\njitter_warning_ms = 5\njitter_critical_ms = 20\n\
                    region_min_share = 0.75\nregion_min_paths = 2\nskip = [\"inflation\"]\n\
                    [[thresholds.pair]]\nsource = \"a\"\ntarget = \"b\"\nslo_p95_ms = 60\n";
        let config = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let t = &config.thresholds;
        assert_eq!(
            t.limits,
            PathLimits {
                slo_p95_ms: Some(120.0),
                loss_warning_pct: 0.2,
                loss_critical_pct: 2.0,
                loss_min_lost: 3,
                jitter_warning_ms: 5.0,
                jitter_critical_ms: 20.0,
                skip: [DetectorId::Inflation].into_iter().collect(),
            }
        );
        assert_eq!(
            (
                t.detour_min_pct,
                t.detour_min_ms,
                t.inflation_factor,
                t.inflation_min_ms
            ),
            (10.0, 2.0, 2.5, 1.0)
        );
        assert_eq!((t.asymmetry_min_pct, t.asymmetry_min_ms), (30.0, 8.0));
        assert_eq!((t.region_min_share, t.region_min_paths), (0.75, 2));
        assert_eq!(t.for_path("a", "b").slo_p95_ms, Some(60.0));
        assert_eq!(t.for_path("b", "a").slo_p95_ms, Some(120.0));
        // No table: the defaults.
        let config = crate::config::parse(
            "[[region]]\nname = \"a\"\ntargets = [\"10.0.0.1\"]\n[[region]]\nname = \"b\"\ntargets = [\"10.0.0.2\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(config.thresholds, Thresholds::default());
    }
}
