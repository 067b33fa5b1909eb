//! The heatmap's model: one cell per (source, target) in the drawn order, its value
//! for the view and its tooltip, and the findings that outline cells and regions.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::legend::scale_for;
use super::order::order_regions;
use super::{Options, View};
use crate::config::{Location, ProbeKind};
use crate::lab::great_circle_km;
use crate::render::scale::Scale;
use crate::report::PathEntry;
use crate::run::{Anomaly, Direction, Run, Severity, Subject};
use crate::units::ms as fmt_ms;

/// What is drawn, before any geometry.
pub(super) struct Model<'r> {
    pub kind: ProbeKind,
    /// The region names in the drawn order.
    pub names: Vec<&'r str>,
    /// Cells and their tooltips, row by row.
    pub cells: Vec<(Cell, String)>,
    /// The severity outlining each cell, if any.
    pub outlines: Vec<Option<Severity>>,
    pub findings: Findings<'r>,
    pub scale: Scale,
}

impl<'r> Model<'r> {
    pub fn build(run: &'r Run, opts: &Options) -> Model<'r> {
        let kind = opts.kind.unwrap_or_else(|| default_kind(run));
        let paths = pick(run, kind);
        let base_paths = opts.baseline.map(|b| pick(b, kind));
        let order = order_regions(run, &paths, opts.order);
        let n = order.len();
        let names: Vec<&str> = order
            .iter()
            .map(|&i| run.regions[i].name.as_str())
            .collect();

        // Findings of the drawn kind: outlines and tooltip lines.
        let findings = Findings::of(run, kind);
        let mut outlines: Vec<Option<Severity>> = Vec::with_capacity(n * n);
        // Cells and their tooltips, in drawing order.
        let mut cells = Vec::with_capacity(n * n);
        for &si in &order {
            let s = &run.regions[si];
            for &ti in &order {
                let t = &run.regions[ti];
                let (cell, mut tip) = cell_of(
                    run,
                    opts.view,
                    s.name.as_str(),
                    t.name.as_str(),
                    si == ti,
                    s.reported,
                    &paths,
                    base_paths.as_ref(),
                    s.location,
                    t.location,
                );
                let mut outline = None;
                if let Some(f) = findings.paths.get(&(s.name.as_str(), t.name.as_str())) {
                    outline = Some(f.severity);
                    for line in &f.lines {
                        tip.push('\n');
                        tip.push_str(line);
                    }
                }
                for (region, line) in &findings.region_lines {
                    let row = region.0 == s.name && region.1;
                    let col = region.0 == t.name && !region.1;
                    if (row || col) && si != ti {
                        tip.push('\n');
                        tip.push_str(line);
                    }
                }
                outlines.push(outline);
                cells.push((cell, tip));
            }
        }
        let scale = scale_for(
            opts.view,
            cells.iter().filter_map(|(c, _)| match c {
                Cell::Value(v) => Some(*v),
                _ => None,
            }),
        );
        Model {
            kind,
            names,
            cells,
            outlines,
            findings,
            scale,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Diagonal,
    NoData,
    Unreachable,
    Value(f64),
}
/// The path drawn for (source, target, kind): of several targets, the one with the most
/// replies (then the first in the run's order).
pub(super) fn pick(run: &Run, kind: ProbeKind) -> BTreeMap<(&str, &str), &PathEntry> {
    crate::run::one_path_per_pair(&run.paths, |p| {
        (p.kind == kind).then_some((p.source.as_str(), p.target.as_str()))
    })
}

/// The kind with the most paths (ties: udp, icmp, tcp).
pub fn default_kind(run: &Run) -> ProbeKind {
    let mut best = (0, ProbeKind::Udp);
    for kind in [ProbeKind::Udp, ProbeKind::Icmp, ProbeKind::Tcp] {
        let n = run.paths.iter().filter(|p| p.kind == kind).count();
        if n > best.0 {
            best = (n, kind);
        }
    }
    best.1
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Milliseconds in a tooltip: whole numbers from 10 ms, one decimal below.
fn tip_ms(v: f64) -> String {
    crate::units::ms_whole_from(v, 10.0)
}

/// The fiber bound of a path in ms of RTT ([`crate::units::fiber_bound_ms`]).
fn fiber_bound_ms(a: Option<Location>, b: Option<Location>) -> Option<f64> {
    Some(crate::units::fiber_bound_ms(great_circle_km(a?, b?)))
}

/// A path's findings, for its outline and tooltip.
pub(super) struct PathFindings {
    pub severity: Severity,
    pub lines: Vec<String>,
}

/// The findings of one probe kind, arranged for drawing.
pub(super) struct Findings<'r> {
    pub paths: BTreeMap<(&'r str, &'r str), PathFindings>,
    /// (region, outgoing?, severity) of region findings; `both` gives two entries.
    pub regions: Vec<(&'r str, bool, Severity)>,
    /// ((region, outgoing?), tooltip line) for the cells of a region's row or column.
    pub region_lines: Vec<((&'r str, bool), String)>,
}

impl<'r> Findings<'r> {
    fn of(run: &'r Run, kind: ProbeKind) -> Findings<'r> {
        let mut f = Findings {
            paths: BTreeMap::new(),
            regions: Vec::new(),
            region_lines: Vec::new(),
        };
        fn walk<'r>(a: &'r Anomaly, f: &mut Findings<'r>) {
            let line = format!("{} {}: {}", a.severity, a.detector, a.message);
            match &a.subject {
                Subject::Path { source, target } => {
                    let e =
                        f.paths
                            .entry((source.as_str(), target.as_str()))
                            .or_insert(PathFindings {
                                severity: a.severity,
                                lines: Vec::new(),
                            });
                    e.severity = e.severity.max(a.severity);
                    e.lines.push(line);
                }
                Subject::Region { region, direction } => {
                    let dirs: &[bool] = match direction {
                        Direction::Outgoing => &[true],
                        Direction::Incoming => &[false],
                        Direction::Both => &[true, false],
                    };
                    for &outgoing in dirs {
                        f.regions.push((region.as_str(), outgoing, a.severity));
                        f.region_lines
                            .push(((region.as_str(), outgoing), line.clone()));
                    }
                }
            }
            for inner in &a.explains {
                walk(inner, f);
            }
        }
        for a in run.anomalies.iter().filter(|a| a.kind == kind) {
            walk(a, &mut f);
        }
        f
    }
}
#[allow(clippy::too_many_arguments)]
fn cell_of(
    run: &Run,
    view: View,
    s: &str,
    t: &str,
    diagonal: bool,
    reported: bool,
    paths: &BTreeMap<(&str, &str), &PathEntry>,
    base: Option<&BTreeMap<(&str, &str), &PathEntry>>,
    sl: Option<Location>,
    tl: Option<Location>,
) -> (Cell, String) {
    let _ = run;
    let head = format!("{s} → {t}");
    if diagonal {
        return (Cell::Diagonal, head);
    }
    if !reported {
        return (Cell::NoData, format!("{head}: no data, {s} sent no report"));
    }
    let Some(p) = paths.get(&(s, t)) else {
        return (Cell::NoData, format!("{head}: no data, path not measured"));
    };
    let mut tip = head;
    let lost = p.sent.saturating_sub(p.received);
    let loss_line = match p.loss {
        Some(l) if lost > 0 => format!("loss {:.1}% ({lost}/{})", l * 100.0, p.sent),
        Some(_) => "loss 0%".to_string(),
        None => "nothing sent".to_string(),
    };
    let Some(rtt) = p.rtt_us else {
        tip.push_str(": ");
        tip.push_str(&loss_line);
        if p.sent == 0 {
            if let Some(e) = &p.resolve_error {
                let _ = write!(tip, ": {e}");
            }
            return (Cell::NoData, tip);
        }
        tip.push_str(", unreachable (no reply)");
        return (Cell::Unreachable, tip);
    };
    // One line, kept short: a 100-region map has 9,900 of these.
    let _ = write!(
        tip,
        ": p50 {} p95 {} ms, {loss_line}",
        tip_ms(ms(rtt.p50)),
        tip_ms(ms(rtt.p95))
    );
    let cell = match view {
        View::Rtt => Cell::Value(ms(rtt.p50)),
        View::Loss => Cell::Value(p.loss.unwrap_or(0.0)),
        View::Inflation => {
            match fiber_bound_ms(sl, tl) {
                Some(bound) if bound > 0.0 => {
                    let r = ms(rtt.p50) / bound;
                    let _ = write!(tip, ", {r:.2}× the fiber bound ({} ms)", fmt_ms(bound));
                    if r < 1.0 {
                        tip.push_str(": faster than light in fiber, so a location or the measurement is wrong");
                    }
                    Cell::Value(r)
                }
                _ => {
                    tip.push_str(", no inflation: a location is missing");
                    Cell::NoData
                }
            }
        }
        View::Delta => match base.and_then(|b| b.get(&(s, t))).and_then(|b| b.rtt_us) {
            Some(b) => {
                let d = ms(rtt.p50) - ms(b.p50);
                let _ = write!(
                    tip,
                    ", baseline p50 {} ms, change {}{} ms",
                    fmt_ms(ms(b.p50)),
                    if d > 0.0 { "+" } else { "" },
                    fmt_ms(d)
                );
                Cell::Value(d)
            }
            None => {
                tip.push_str(", no baseline RTT for this path");
                Cell::NoData
            }
        },
    };
    (cell, tip)
}
