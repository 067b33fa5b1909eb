//! The raw shape of `[thresholds]` and its `[[thresholds.pair]]` rules.
//!
//! Like the rest of `raw`, this only copies out known keys with their TOML types checked
//! and their spans kept; what the values mean (ranges, detector ids, region patterns) is
//! checked by `config::thresholds`.

use toml::de::{DeTable, DeValue};

use super::{At, Reader, Span};

/// The keys a pair rule may override, also allowed in `[thresholds]`.
pub(in crate::config) const PAIR_LIMIT_KEYS: &[&str] = &[
    "slo_p95_ms",
    "loss_warning_pct",
    "loss_critical_pct",
    "loss_min_lost",
    "jitter_warning_ms",
    "jitter_critical_ms",
    "skip",
];

/// The keys of `[thresholds]`.
pub(in crate::config) const THRESHOLD_KEYS: &[&str] = &[
    "loss_warning_pct",
    "loss_critical_pct",
    "loss_min_lost",
    "slo_p95_ms",
    "detour_min_pct",
    "detour_min_ms",
    "inflation_factor",
    "inflation_min_ms",
    "asymmetry_min_pct",
    "asymmetry_min_ms",
    "jitter_warning_ms",
    "jitter_critical_ms",
    "region_min_share",
    "region_min_paths",
    "skip",
    "pair",
];

/// The keys of one `[[thresholds.pair]]`.
pub(in crate::config) const PAIR_KEYS: &[&str] = &[
    "source",
    "target",
    "both_directions",
    "slo_p95_ms",
    "loss_warning_pct",
    "loss_critical_pct",
    "loss_min_lost",
    "jitter_warning_ms",
    "jitter_critical_ms",
    "skip",
];

/// Limits that `[thresholds]` sets and a pair rule may override.
#[derive(Debug, Default)]
pub(in crate::config) struct RawLimits {
    pub slo_p95_ms: Option<At<f64>>,
    pub loss_warning_pct: Option<At<f64>>,
    pub loss_critical_pct: Option<At<f64>>,
    pub loss_min_lost: Option<At<i128>>,
    pub jitter_warning_ms: Option<At<f64>>,
    pub jitter_critical_ms: Option<At<f64>>,
    pub skip: Option<At<Vec<At<String>>>>,
}

impl RawLimits {
    /// Whether any key is present.
    pub fn any(&self) -> bool {
        self.slo_p95_ms.is_some()
            || self.loss_warning_pct.is_some()
            || self.loss_critical_pct.is_some()
            || self.loss_min_lost.is_some()
            || self.jitter_warning_ms.is_some()
            || self.jitter_critical_ms.is_some()
            || self.skip.is_some()
    }
}

/// `[thresholds]`.
#[derive(Debug, Default)]
pub(in crate::config) struct RawThresholds {
    pub limits: RawLimits,
    pub detour_min_pct: Option<At<f64>>,
    pub detour_min_ms: Option<At<f64>>,
    pub inflation_factor: Option<At<f64>>,
    pub inflation_min_ms: Option<At<f64>>,
    pub asymmetry_min_pct: Option<At<f64>>,
    pub asymmetry_min_ms: Option<At<f64>>,
    pub region_min_share: Option<At<f64>>,
    pub region_min_paths: Option<At<i128>>,
    pub pairs: Vec<RawPair>,
}

/// One `[[thresholds.pair]]`.
#[derive(Debug, Default)]
pub(in crate::config) struct RawPair {
    pub span: Span,
    pub source: Option<At<String>>,
    pub target: Option<At<String>>,
    pub both_directions: Option<At<bool>>,
    pub limits: RawLimits,
    /// Whether the table has a key that is not allowed (reported by itself).
    pub unknown_keys: bool,
    /// Keys present but unusable, or meant by a misspelt key.
    pub broken: Vec<&'static str>,
}

impl Reader<'_> {
    pub(super) fn thresholds(&mut self, t: &DeTable<'_>) -> RawThresholds {
        self.unknown_keys(t, THRESHOLD_KEYS, "in [thresholds]");
        let mut raw = RawThresholds {
            limits: self.limits(t),
            detour_min_pct: self.number(t, "detour_min_pct", "20"),
            detour_min_ms: self.number(t, "detour_min_ms", "5"),
            inflation_factor: self.number(t, "inflation_factor", "3.0"),
            inflation_min_ms: self.number(t, "inflation_min_ms", "5"),
            asymmetry_min_pct: self.number(t, "asymmetry_min_pct", "25"),
            asymmetry_min_ms: self.number(t, "asymmetry_min_ms", "5"),
            region_min_share: self.number(t, "region_min_share", "0.5"),
            region_min_paths: self.integer(t, "region_min_paths", "3"),
            pairs: Vec::new(),
        };
        if let Some((key, value)) = t.get_key_value("pair") {
            raw.pairs = self.tables(key, value, "pair", "[[thresholds.pair]]", |r, t, span| {
                let (mut pair, broken) = r.scoped(|r| r.pair(t, span));
                pair.broken = broken;
                pair
            });
        }
        raw
    }

    fn pair(&mut self, t: &DeTable<'_>, span: Span) -> RawPair {
        self.unknown_keys(t, PAIR_KEYS, "in [[thresholds.pair]]");
        RawPair {
            span,
            source: self.string(t, "source", r#""us-*""#),
            target: self.string(t, "target", r#""eu-central-1""#),
            both_directions: self.boolean(t, "both_directions", "true"),
            limits: self.limits(t),
            unknown_keys: t.keys().any(|k| !PAIR_KEYS.contains(&k.get_ref().as_ref())),
            broken: Vec::new(),
        }
    }

    fn limits(&mut self, t: &DeTable<'_>) -> RawLimits {
        RawLimits {
            slo_p95_ms: self.number(t, "slo_p95_ms", "150"),
            loss_warning_pct: self.number(t, "loss_warning_pct", "0.1"),
            loss_critical_pct: self.number(t, "loss_critical_pct", "1.0"),
            loss_min_lost: self.integer(t, "loss_min_lost", "2"),
            jitter_warning_ms: self.number(t, "jitter_warning_ms", "10"),
            jitter_critical_ms: self.number(t, "jitter_critical_ms", "50"),
            skip: self.strings(t, "skip", r#"["asymmetry"]"#),
        }
    }
}

/// Reads `[thresholds]` from the document root, if present; `None` also when it is not
/// a table (the problem is reported and the key marked failed).
pub(super) fn read(root: &DeTable<'_>, r: &mut Reader<'_>) -> Option<RawThresholds> {
    let (key, value) = root.get_key_value("thresholds")?;
    match value.get_ref() {
        DeValue::Table(t) => Some(r.scoped(|r| r.thresholds(t)).0),
        DeValue::Array(_) => {
            r.fail(
                "thresholds",
                key.span(),
                "thresholds must be one table; write [thresholds], not [[thresholds]]",
            );
            None
        }
        other => {
            r.wrong_type(
                key,
                value,
                "a table",
                "[thresholds] on a line of its own",
                other,
            );
            r.failed.push("thresholds");
            None
        }
    }
}
