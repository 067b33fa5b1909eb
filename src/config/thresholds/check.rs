//! Checking `[thresholds]`: detector ids in `skip`, warning below critical, the shift
//! window, and the region patterns of `[[thresholds.pair]]` rules against the
//! configured regions (the ranges were checked as the values were read).
//!
//! Pure functions from the raw values (`raw`) to [`Thresholds`], pushing every problem
//! found; no file input.

use super::super::RegionName;
use super::super::keys::{Key, limits as lim, pair as keys, thresholds as fleet};
use super::super::raw::{At, Problem, Table};
use super::super::suggest::{closest, list};
use super::{DetectorId, DetectorSet, PairRule, PathLimits, RegionPattern, Thresholds};

/// Checks `[thresholds]` and its pair rules; `names` are the configuration's regions
/// when they are known. `None` when a value is unusable (every problem is in `out`).
pub(in crate::config) fn check(
    raw: Option<&Table>,
    pairs: &[Table],
    names: Option<&[&str]>,
    out: &mut Vec<Problem>,
) -> Option<Thresholds> {
    let mut t = Thresholds::default();
    let Some(raw) = raw else { return Some(t) };
    let before = out.len();
    for (k, to) in [
        (&fleet::DETOUR_MIN_PCT, &mut t.detour_min_pct),
        (&fleet::DETOUR_MIN_MS, &mut t.detour_min_ms),
        (&fleet::INFLATION_FACTOR, &mut t.inflation_factor),
        (&fleet::INFLATION_MIN_MS, &mut t.inflation_min_ms),
        (&fleet::ASYMMETRY_MIN_PCT, &mut t.asymmetry_min_pct),
        (&fleet::ASYMMETRY_MIN_MS, &mut t.asymmetry_min_ms),
        (&fleet::REGION_MIN_SHARE, &mut t.region_min_share),
        (&fleet::SHIFT_MARGIN_PCT, &mut t.shift_margin_pct),
        (&fleet::SHIFT_MARGIN_MS, &mut t.shift_margin_ms),
        (&fleet::SHIFT_DEVIATIONS, &mut t.shift_deviations),
    ] {
        if let Some(v) = raw.number(k) {
            *to = v.value;
        }
    }
    for (k, to) in [
        (&fleet::REGION_MIN_PATHS, &mut t.region_min_paths),
        (&fleet::SHIFT_WINDOW, &mut t.shift_window),
        (&fleet::SHIFT_MIN_RUNS, &mut t.shift_min_runs),
    ] {
        if let Some(n) = raw.integer(k).and_then(|v| usize::try_from(v.value).ok()) {
            *to = n;
        }
    }
    ordered(
        raw,
        (&fleet::SHIFT_MIN_RUNS, t.shift_min_runs as f64),
        (&fleet::SHIFT_WINDOW, t.shift_window as f64),
        true,
        out,
    );
    let base = limits(raw, true, out);
    base.apply(&mut t.limits);
    ordered_limits(raw, &t.limits, true, out);
    for pair in pairs {
        if let Some(rule) = pair_rule(pair, names, out) {
            t.pairs.push(rule);
        }
    }
    (out.len() == before).then_some(t)
}

/// The limits a table sets, as a rule for every pair.
fn limits(raw: &Table, fleet: bool, out: &mut Vec<Problem>) -> PairRule {
    let num = |k: &Key| raw.number(k).map(|v| v.value);
    PairRule {
        slo_p95_ms: num(&lim::SLO_P95_MS),
        loss_warning_pct: num(&lim::LOSS_WARNING_PCT),
        loss_critical_pct: num(&lim::LOSS_CRITICAL_PCT),
        loss_min_lost: raw
            .integer(&lim::LOSS_MIN_LOST)
            .and_then(|n| u64::try_from(n.value).ok()),
        jitter_warning_ms: num(&lim::JITTER_WARNING_MS),
        jitter_critical_ms: num(&lim::JITTER_CRITICAL_MS),
        skip: raw
            .texts(&lim::SKIP)
            .map(|s| skip_list(&s, fleet, out))
            .unwrap_or_default(),
        ..PairRule::new(RegionPattern::any(), RegionPattern::any())
    }
}

/// A warning limit above its critical limit in the same table is a mistake.
fn ordered_limits(raw: &Table, effective: &PathLimits, fleet: bool, out: &mut Vec<Problem>) {
    let loss = (&lim::LOSS_WARNING_PCT, effective.loss_warning_pct);
    ordered(
        raw,
        loss,
        (&lim::LOSS_CRITICAL_PCT, effective.loss_critical_pct),
        fleet,
        out,
    );
    let jitter = (&lim::JITTER_WARNING_MS, effective.jitter_warning_ms);
    ordered(
        raw,
        jitter,
        (&lim::JITTER_CRITICAL_MS, effective.jitter_critical_ms),
        fleet,
        out,
    );
}

/// `low` must not be above `high` (each with its value in effect, the file's or the
/// default): reported at the key the table sets, the higher one first. In a pair rule,
/// only a rule that sets both is checked.
fn ordered(raw: &Table, low: (&Key, f64), high: (&Key, f64), fleet: bool, out: &mut Vec<Problem>) {
    let ((lk, l), (hk, h)) = (low, high);
    let (lat, hat) = (raw.get_span(lk), raw.get_span(hk));
    if (!fleet && (lat.is_none() || hat.is_none())) || l <= h || !(l.is_finite() && h.is_finite()) {
        return;
    }
    let default =
        |at: &Option<std::ops::Range<usize>>| if at.is_some() { "" } else { ", the default" };
    let (lkey, hkey) = (lk.name, hk.name);
    match (&lat, &hat) {
        (_, Some(at)) => out.push(Problem::new(
            at.clone(),
            format!(
                "{hkey} ({h}) is below {lkey} ({l}{}); make {hkey} at least {lkey}",
                default(&lat)
            ),
        )),
        (Some(at), None) => out.push(Problem::new(
            at.clone(),
            format!(
                "{lkey} ({l}) is above {hkey} ({h}{}); make {lkey} at most {hkey}",
                default(&hat)
            ),
        )),
        (None, None) => {}
    }
}

fn skip_list(raw: &At<&[At<String>]>, fleet: bool, out: &mut Vec<Problem>) -> DetectorSet {
    let names: Vec<&str> = DetectorId::ALL.iter().map(|d| d.as_str()).collect();
    let mut set = DetectorSet::default();
    for item in raw.value {
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

fn pair_rule(raw: &Table, names: Option<&[&str]>, out: &mut Vec<Problem>) -> Option<PairRule> {
    let before = out.len();
    let (source, target) = (raw.text(&keys::SOURCE), raw.text(&keys::TARGET));
    let unset = |k: &Key| !raw.has(k) && !raw.is_broken(k);
    if unset(&keys::SOURCE) && unset(&keys::TARGET) {
        out.push(Problem::new(
            raw.span.clone(),
            "a pair rule needs source, target or both (names or patterns like \"us-*\"); \
             for every pair, set the key in [thresholds] itself",
        ));
    }
    if lim::ALL.iter().all(unset) && !raw.unknown_keys {
        out.push(Problem::new(
            raw.span.clone(),
            "this pair rule changes nothing; set slo_p95_ms, a loss_ or jitter_ key, or skip",
        ));
    }
    let source = source.map_or(Some(RegionPattern::any()), |p| {
        pattern(&p, "source", names, out)
    });
    let target = target.map_or(Some(RegionPattern::any()), |p| {
        pattern(&p, "target", names, out)
    });
    let rule = limits(raw, false, out);
    let mut effective = PathLimits::default();
    rule.apply(&mut effective);
    ordered_limits(raw, &effective, false, out);
    let rule = PairRule {
        source: source?,
        target: target?,
        both_directions: raw.flag(&keys::BOTH_DIRECTIONS).is_some_and(|b| b.value),
        ..rule
    };
    (out.len() == before).then_some(rule)
}

fn pattern(
    raw: &At<&str>,
    key: &str,
    names: Option<&[&str]>,
    out: &mut Vec<Problem>,
) -> Option<RegionPattern> {
    let text = raw.value;
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
