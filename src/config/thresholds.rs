//! `[thresholds]`: the limits of the analysis stage's detectors, for the whole fleet and
//! per pair of regions.
//!
//! This module owns the typed [`Thresholds`] (every default applied), the detector ids
//! ([`DetectorId`]) that the configuration, the run file, the CLI and the docs share,
//! region patterns (`*` and `?` globs) and the resolution of the limits of one path
//! (later `[[thresholds.pair]]` rules override earlier ones). It also checks the raw
//! values read by `raw`, reporting every problem; it judges no measurement itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::keys;
use super::suggest::list;

mod check;

pub(super) use check::check;

/// The detectors of the analysis stage, by their stable kebab-case ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorId {
    Loss,
    Slo,
    Detour,
    Inflation,
    Asymmetry,
    Jitter,
    Unreachable,
    Region,
    Prober,
    Shift,
}

impl DetectorId {
    pub const ALL: [DetectorId; 10] = [
        DetectorId::Loss,
        DetectorId::Slo,
        DetectorId::Detour,
        DetectorId::Inflation,
        DetectorId::Asymmetry,
        DetectorId::Jitter,
        DetectorId::Unreachable,
        DetectorId::Region,
        DetectorId::Prober,
        DetectorId::Shift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectorId::Loss => "loss",
            DetectorId::Slo => "slo",
            DetectorId::Detour => "detour",
            DetectorId::Inflation => "inflation",
            DetectorId::Asymmetry => "asymmetry",
            DetectorId::Jitter => "jitter",
            DetectorId::Unreachable => "unreachable",
            DetectorId::Region => "region",
            DetectorId::Prober => "prober",
            DetectorId::Shift => "shift",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for DetectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DetectorId::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DetectorId::ALL.iter().map(|d| d.as_str()).collect();
                format!("unknown detector `{s}`: use {}", list(&names))
            })
    }
}

/// A set of detectors (the ones a path skips).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorSet(u16);

impl DetectorSet {
    pub fn contains(self, d: DetectorId) -> bool {
        self.0 & d.bit() != 0
    }

    pub fn insert(&mut self, d: DetectorId) {
        self.0 |= d.bit();
    }

    pub fn union(self, other: DetectorSet) -> DetectorSet {
        DetectorSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`DetectorId::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = DetectorId> {
        DetectorId::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
    }
}

impl FromIterator<DetectorId> for DetectorSet {
    fn from_iter<I: IntoIterator<Item = DetectorId>>(iter: I) -> Self {
        let mut set = DetectorSet::default();
        for d in iter {
            set.insert(d);
        }
        set
    }
}

/// `[thresholds]`, with every default applied. Percentages are as written (`1.0` is
/// 1%), times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// The limits of every path, before pair rules.
    pub limits: PathLimits,
    /// `detour`: a relay must save at least this share of the direct RTT... (default 20)
    pub detour_min_pct: f64,
    /// ...and at least this many milliseconds (default 5).
    pub detour_min_ms: f64,
    /// `inflation`: p50 above this multiple of the fiber bound (default 3.0)...
    pub inflation_factor: f64,
    /// ...by at least this many milliseconds (default 5).
    pub inflation_min_ms: f64,
    /// `asymmetry`: the slow direction exceeds the fast one by more than this share of
    /// the fast one (default 25)...
    pub asymmetry_min_pct: f64,
    /// ...and by more than this many milliseconds (default 5).
    pub asymmetry_min_ms: f64,
    /// `region`: more than this share of a region's paths must be anomalous (default 0.5).
    pub region_min_share: f64,
    /// `region`: at least this many of its paths must be anomalous (default 3).
    pub region_min_paths: usize,
    /// `shift`: the earlier runs a path's reference is built from (default 24)...
    pub shift_window: usize,
    /// ...of which a path needs this many before it is judged (default 12).
    pub shift_min_runs: usize,
    /// `shift`: the band above the reference reaches at least this share of it, in
    /// percent (default 8)...
    pub shift_margin_pct: f64,
    /// ...and at least this many milliseconds (default 1)...
    pub shift_margin_ms: f64,
    /// ...and at least this many robust standard deviations of the reference (default 5).
    pub shift_deviations: f64,
    /// `[[thresholds.pair]]` rules, in file order.
    pub pairs: Vec<PairRule>,
}

/// The limits that apply to one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathLimits {
    /// `slo`: the p95 RTT must not exceed this; `None`: no SLO (the default).
    pub slo_p95_ms: Option<f64>,
    /// `loss`: the Wilson lower bound of the loss at which a path warns (default 0.1)...
    pub loss_warning_pct: f64,
    /// ...and is critical (default 1.0)...
    pub loss_critical_pct: f64,
    /// ...when at least this many probes were lost (default 2).
    pub loss_min_lost: u64,
    /// `jitter`: warning above this many milliseconds (default 10)...
    pub jitter_warning_ms: f64,
    /// ...critical above this many (default 50).
    pub jitter_critical_ms: f64,
    /// Detectors that do not judge this path.
    pub skip: DetectorSet,
}

impl Default for PathLimits {
    fn default() -> Self {
        use keys::limits::*;
        PathLimits {
            slo_p95_ms: None,
            loss_warning_pct: LOSS_WARNING_PCT.number(),
            loss_critical_pct: LOSS_CRITICAL_PCT.number(),
            loss_min_lost: LOSS_MIN_LOST.integer() as u64,
            jitter_warning_ms: JITTER_WARNING_MS.number(),
            jitter_critical_ms: JITTER_CRITICAL_MS.number(),
            skip: DetectorSet::default(),
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        use keys::thresholds::*;
        let whole = |k: keys::Key| usize::try_from(k.integer()).unwrap_or(1);
        Thresholds {
            limits: PathLimits::default(),
            detour_min_pct: DETOUR_MIN_PCT.number(),
            detour_min_ms: DETOUR_MIN_MS.number(),
            inflation_factor: INFLATION_FACTOR.number(),
            inflation_min_ms: INFLATION_MIN_MS.number(),
            asymmetry_min_pct: ASYMMETRY_MIN_PCT.number(),
            asymmetry_min_ms: ASYMMETRY_MIN_MS.number(),
            region_min_share: REGION_MIN_SHARE.number(),
            region_min_paths: whole(REGION_MIN_PATHS),
            shift_window: whole(SHIFT_WINDOW),
            shift_min_runs: whole(SHIFT_MIN_RUNS),
            shift_margin_pct: SHIFT_MARGIN_PCT.number(),
            shift_margin_ms: SHIFT_MARGIN_MS.number(),
            shift_deviations: SHIFT_DEVIATIONS.number(),
            pairs: Vec::new(),
        }
    }
}

/// One `[[thresholds.pair]]`: limits for the paths from `source` to `target` (and back,
/// with `both_directions`).
#[derive(Debug, Clone, PartialEq)]
pub struct PairRule {
    pub source: RegionPattern,
    pub target: RegionPattern,
    pub both_directions: bool,
    pub slo_p95_ms: Option<f64>,
    pub loss_warning_pct: Option<f64>,
    pub loss_critical_pct: Option<f64>,
    pub loss_min_lost: Option<u64>,
    pub jitter_warning_ms: Option<f64>,
    pub jitter_critical_ms: Option<f64>,
    /// Added to the skipped detectors (never removed).
    pub skip: DetectorSet,
}

impl PairRule {
    /// A rule from `source` to `target` that overrides nothing yet.
    pub fn new(source: RegionPattern, target: RegionPattern) -> PairRule {
        PairRule {
            source,
            target,
            both_directions: false,
            slo_p95_ms: None,
            loss_warning_pct: None,
            loss_critical_pct: None,
            loss_min_lost: None,
            jitter_warning_ms: None,
            jitter_critical_ms: None,
            skip: DetectorSet::default(),
        }
    }

    /// Whether the rule applies to the path `source -> target`.
    pub fn applies(&self, source: &str, target: &str) -> bool {
        (self.source.matches(source) && self.target.matches(target))
            || (self.both_directions && self.source.matches(target) && self.target.matches(source))
    }

    pub(super) fn apply(&self, limits: &mut PathLimits) {
        let set = |v: Option<f64>, to: &mut f64| {
            if let Some(v) = v {
                *to = v;
            }
        };
        if self.slo_p95_ms.is_some() {
            limits.slo_p95_ms = self.slo_p95_ms;
        }
        set(self.loss_warning_pct, &mut limits.loss_warning_pct);
        set(self.loss_critical_pct, &mut limits.loss_critical_pct);
        if let Some(n) = self.loss_min_lost {
            limits.loss_min_lost = n;
        }
        set(self.jitter_warning_ms, &mut limits.jitter_warning_ms);
        set(self.jitter_critical_ms, &mut limits.jitter_critical_ms);
        limits.skip = limits.skip.union(self.skip);
    }
}

/// A region name, or a pattern: `*` stands for any characters, `?` for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPattern(pub(super) String);

impl RegionPattern {
    /// A pattern as written (the configuration loader checks its characters; here any
    /// text is taken, and matches by the same rules).
    pub fn new(pattern: &str) -> RegionPattern {
        RegionPattern(pattern.to_string())
    }

    /// `*`: every region.
    pub fn any() -> RegionPattern {
        RegionPattern("*".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_glob(&self) -> bool {
        self.0.contains(['*', '?'])
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for RegionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` and `?` matching over bytes (region names are ASCII), without backtracking blowup:
/// the classic two-pointer algorithm that remembers the last `*`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

impl Thresholds {
    /// The limits of the path `source -> target`: the fleet's, then every pair rule
    /// that applies, in file order.
    pub fn for_path(&self, source: &str, target: &str) -> PathLimits {
        let mut limits = self.limits;
        for rule in self.pairs.iter().filter(|r| r.applies(source, target)) {
            rule.apply(&mut limits);
        }
        limits
    }

    /// A resolver for the regions `names`, which matches every rule's patterns once per
    /// region rather than once per path.
    pub fn resolver(&self, names: &[&str]) -> LimitResolver<'_> {
        let rules = self
            .pairs
            .iter()
            .map(|rule| {
                let src = names.iter().map(|n| rule.source.matches(n)).collect();
                let dst = names.iter().map(|n| rule.target.matches(n)).collect();
                (rule, src, dst)
            })
            .collect();
        LimitResolver {
            base: self.limits,
            rules,
        }
    }
}

/// The limits of each path between regions known by index (see [`Thresholds::resolver`]).
#[derive(Debug)]
pub struct LimitResolver<'t> {
    base: PathLimits,
    rules: Vec<(&'t PairRule, Vec<bool>, Vec<bool>)>,
}

impl LimitResolver<'_> {
    /// The limits of the path from region `i` to region `j`.
    pub fn get(&self, i: usize, j: usize) -> PathLimits {
        let mut limits = self.base;
        let at = |v: &[bool], k: usize| v.get(k).copied().unwrap_or(false);
        for (rule, src, dst) in &self.rules {
            let forward = at(src, i) && at(dst, j);
            let backward = rule.both_directions && at(src, j) && at(dst, i);
            if forward || backward {
                rule.apply(&mut limits);
            }
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        for (pattern, name, want) in [
            ("*", "us-east-1", true),
            ("us-*", "us-east-1", true),
            ("us-*", "eu-west-1", false),
            ("*-1", "eu-west-1", true),
            ("*-1", "eu-west-2", false),
            ("eu-?????-1", "eu-north-1", true),
            ("eu-?????-1", "eu-west-1", false),
            ("*west*", "us-west-2", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("us-east-1", "us-east-1", true),
            ("us-east-1", "us-east-10", false),
            ("**", "", true),
            ("?", "", false),
        ] {
            assert_eq!(
                RegionPattern(pattern.into()).matches(name),
                want,
                "{pattern} {name}"
            );
        }
    }

    fn rule(source: &str, target: &str, both: bool) -> PairRule {
        PairRule {
            both_directions: both,
            ..PairRule::new(RegionPattern::new(source), RegionPattern::new(target))
        }
    }

    #[test]
    fn later_rules_override_earlier_ones_and_skips_add_up() {
        let mut t = Thresholds::default();
        t.pairs.push(PairRule {
            slo_p95_ms: Some(100.0),
            skip: [DetectorId::Jitter].into_iter().collect(),
            ..rule("us-*", "eu-*", true)
        });
        t.pairs.push(PairRule {
            slo_p95_ms: Some(80.0),
            skip: [DetectorId::Asymmetry].into_iter().collect(),
            ..rule("us-east-1", "eu-west-1", false)
        });
        let names = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"];
        let resolver = t.resolver(&names);
        for (i, j, slo, skip) in [
            (
                0,
                2,
                Some(80.0),
                vec![DetectorId::Asymmetry, DetectorId::Jitter],
            ),
            (2, 0, Some(100.0), vec![DetectorId::Jitter]),
            (1, 2, Some(100.0), vec![DetectorId::Jitter]),
            (2, 1, Some(100.0), vec![DetectorId::Jitter]),
            (0, 3, None, vec![]),
            (3, 2, None, vec![]),
        ] {
            let by_name = t.for_path(names[i], names[j]);
            assert_eq!(by_name, resolver.get(i, j), "{i} {j}");
            assert_eq!(by_name.slo_p95_ms, slo, "{i} {j}");
            let mut want = skip.clone();
            want.sort();
            assert_eq!(by_name.skip.iter().collect::<Vec<_>>(), want, "{i} {j}");
        }
        // Out of range indices are simply unmatched.
        assert_eq!(resolver.get(99, 0), t.limits);
    }

    #[test]
    fn detector_ids_round_trip() {
        for d in DetectorId::ALL {
            assert_eq!(d.as_str().parse::<DetectorId>(), Ok(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert!("Loss".parse::<DetectorId>().is_err());
    }

    #[test]
    fn good_thresholds_fixture_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config/good-thresholds.toml");
        let config = crate::config::load(&path).expect("good-thresholds.toml loads");
        let t = &config.thresholds;
        assert_eq!(
            (t.limits.loss_warning_pct, t.limits.loss_critical_pct),
            (0.5, 2.0)
        );
        assert_eq!(t.limits.jitter_warning_ms, 15.0);
        assert_eq!(t.pairs.len(), 2);
        let slo = |s: &str, d: &str| t.for_path(s, d).slo_p95_ms;
        assert_eq!(slo("us-west-2", "eu-west-1"), Some(120.0));
        assert_eq!(slo("eu-west-1", "us-east-1"), Some(120.0));
        assert_eq!(slo("ap-south-1", "eu-west-1"), Some(250.0));
        let skip = |s: &str, d: &str| t.for_path(s, d).skip.iter().collect::<Vec<_>>();
        assert_eq!(
            skip("us-east-1", "ap-south-1"),
            [DetectorId::Inflation, DetectorId::Asymmetry]
        );
        assert_eq!(skip("ap-south-1", "us-east-1"), [DetectorId::Inflation]);
    }

    #[test]
    fn the_repository_config_writes_out_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regions.toml");
        let config = crate::config::load(&path).expect("regions.toml loads");
        assert_eq!(config.thresholds, Thresholds::default());
    }
}
