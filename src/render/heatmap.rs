//! SVG heatmaps of a run: rows are source regions, columns target regions.
//!
//! Written by hand rather than through a plotting library: every cell carries a
//! `<title>` tooltip and the file must stay small (a 100-region map under 1 MiB), which
//! a general plotting backend does not give. Colours come from perceptual scales
//! ([`super::scale`]); the diagonal, "no data" and "unreachable" are drawn with
//! colours and patterns outside every scale, and the legend explains them. Output is
//! deterministic: the same run gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::scale::{self, Rgb, Scale, Transform};
use crate::config::{Location, ProbeKind};
use crate::lab::great_circle_km;
use crate::report::PathEntry;
use crate::run::{Anomaly, Direction, Run, Severity, Subject};

/// What the colour shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Median RTT (p50), log scale.
    Rtt,
    /// Loss ratio.
    Loss,
    /// p50 RTT over the speed-of-light-in-fiber bound of the great-circle distance.
    Inflation,
    /// Change of p50 RTT against a baseline run.
    Delta,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Rtt => "rtt",
            View::Loss => "loss",
            View::Inflation => "inflation",
            View::Delta => "delta",
        }
    }
}

/// The order of rows and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As the regions are listed in the run (the configuration's order).
    #[default]
    Config,
    /// West to east by longitude; regions without a location last.
    Geo,
    /// Regions with alike RTTs next to each other (average-linkage clustering), so
    /// blocks show.
    Cluster,
}

/// How to draw.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub view: View,
    pub order: Order,
    /// The probe kind to draw; default: the kind with the most paths.
    pub kind: Option<ProbeKind>,
    /// The baseline run of a `delta` view.
    pub baseline: Option<&'a Run>,
    /// Make each cell between two regions a link to `{links}{source}/{target}?kind={kind}`
    /// (names percent-encoded), as the aggregator's web page does.
    pub links: Option<&'a str>,
}

/// Why a heatmap cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum HeatmapError {
    #[error("the delta view needs a baseline run: pass --baseline BASE.json")]
    NoBaseline,
    #[error("the run has no regions")]
    Empty,
}

/// Colour steps of a scale: the cells' colours are quantised to this many levels.
const PALETTE: usize = 128;

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Diagonal,
    NoData,
    Unreachable,
    Value(f64),
}

/// The path drawn for (source, target, kind): of several targets, the one with the most
/// replies (then the first in the run's order).
fn pick(run: &Run, kind: ProbeKind) -> BTreeMap<(&str, &str), &PathEntry> {
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

use crate::units::ms as fmt_ms;

/// The template id of palette step `i`: two lowercase letters (`aa`, `ab`, ...), which
/// cannot clash with the special cells' one-letter ids.
fn palette_id(i: usize) -> String {
    let a = char::from(b'a' + (i / 26 % 26) as u8);
    let b = char::from(b'a' + (i % 26) as u8);
    format!("{a}{b}")
}

/// Milliseconds in a tooltip: whole numbers from 10 ms, one decimal below.
fn tip_ms(v: f64) -> String {
    crate::units::ms_whole_from(v, 10.0)
}

use super::escape::xml;

/// The fiber bound of a path in ms of RTT ([`crate::units::fiber_bound_ms`]).
fn fiber_bound_ms(a: Option<Location>, b: Option<Location>) -> Option<f64> {
    Some(crate::units::fiber_bound_ms(great_circle_km(a?, b?)))
}

/// Renders the heatmap as an SVG document.
pub fn heatmap_svg(run: &Run, opts: &Options) -> Result<String, HeatmapError> {
    if run.regions.is_empty() {
        return Err(HeatmapError::Empty);
    }
    if opts.view == View::Delta && opts.baseline.is_none() {
        return Err(HeatmapError::NoBaseline);
    }
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

    // Geometry.
    let c: usize = if n <= 12 { 48 } else { (720 / n).max(8) };
    let font = c.clamp(7, 12);
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1);
    let label = (longest as f64 * font as f64 * 0.62).ceil() as usize + 12;
    let (gx, gy) = (10 + label, 60 + label);
    let grid = n * c;
    let lx = gx + grid + 30;
    let bar_h = grid.clamp(160, 360);
    let what = match opts.view {
        View::Rtt => format!("RTT p50 ({kind})"),
        View::Loss => format!("loss ({kind})"),
        View::Inflation => format!("RTT over the fiber bound ({kind})"),
        View::Delta => format!(
            "p50 change ({kind}) vs {}",
            opts.baseline.map(|b| b.id.as_str()).unwrap_or("")
        ),
    };
    let title = format!(
        "latmap: {what} · run {} · {}",
        run.id,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    // Bold 16 px text takes up to about 10 px a character; the subtitle about 560 px.
    let width = (lx + 190).max(20 + title.chars().count() * 10).max(580);
    let height = (gy + grid).max(gy + bar_h + 150) + 16;

    let mut out = String::with_capacity(n * n * 110 + 4096);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans,Arial,sans-serif\">"
    );
    let _ = write!(
        out,
        "<defs><pattern id=\"nd\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"{}\"/><rect width=\"1.5\" height=\"6\" fill=\"{}\"/></pattern>",
        scale::NO_DATA.hex(),
        scale::NO_DATA_HATCH.hex()
    );
    // One template cell per colour; a cell is then `<use href="#kI" x="X">` in its row's
    // group: the fewest bytes per cell, as a 100-region map has 9,900 of them.
    out.push_str("<linearGradient id=\"lg\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for i in 0..=16 {
        let t = f64::from(i) / 16.0;
        let _ = write!(
            out,
            "<stop offset=\"{t:.4}\" stop-color=\"{}\"/>",
            scale.at(t).hex()
        );
    }
    out.push_str(
        "</linearGradient></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
    );

    // Title and subtitle.
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>",
        xml(&title)
    );
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"42\" font-size=\"12\" fill=\"#444444\">rows: source region · columns: target region · {n} regions, order: {}</text>",
        match opts.order {
            Order::Config => "as configured",
            Order::Geo => "west to east",
            Order::Cluster => "clustered by RTT",
        }
    );

    // Labels: rows right-aligned left of the grid, columns written upwards above it.
    let _ = writeln!(
        out,
        "<g font-size=\"{font}\" fill=\"#222222\" dominant-baseline=\"central\">"
    );
    let _ = writeln!(out, "<g text-anchor=\"end\">");
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            gx - 6,
            gy + i * c + c / 2,
            xml(name)
        );
    }
    let _ = writeln!(out, "</g>\n<g transform=\"rotate(-90)\">");
    for (j, name) in names.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            6 - gy as i64,
            gx + j * c + c / 2,
            xml(name)
        );
    }
    out.push_str("</g>\n</g>\n");

    // Cells: one row group each. Colours are quantised to PALETTE steps of the scale
    // (finer than the eye can tell apart); each step used gets a template.
    let step = |v: f64| (scale.position(v) * PALETTE as f64).round() as usize;
    let mut used = [false; PALETTE + 1];
    for (cell, _) in &cells {
        if let Cell::Value(v) = cell {
            used[step(*v)] = true;
        }
    }
    out.push_str("<defs>");
    let template = |out: &mut String, id: &str, fill: &str| {
        let _ = write!(
            out,
            "<rect id=\"{id}\" width=\"{c}\" height=\"{c}\" fill=\"{fill}\"/>"
        );
    };
    let _ = write!(
        out,
        "<g id=\"d\"><rect width=\"{c}\" height=\"{c}\" fill=\"{}\"/><line x2=\"{c}\" y2=\"{c}\" stroke=\"{}\"/></g>",
        scale::DIAGONAL.hex(),
        scale::DIAGONAL_LINE.hex()
    );
    template(&mut out, "n", "url(#nd)");
    template(&mut out, "u", &scale::UNREACHABLE.hex());
    for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
        template(
            &mut out,
            &palette_id(i),
            &scale.at(i as f64 / PALETTE as f64).hex(),
        );
    }
    out.push_str("</defs>\n");
    for (row, chunk) in cells.chunks(n.max(1)).enumerate() {
        let _ = writeln!(out, "<g transform=\"translate(0,{})\">", gy + row * c);
        for (col, (cell, tip)) in chunk.iter().enumerate() {
            let id = match cell {
                Cell::Diagonal => "d".to_string(),
                Cell::NoData => "n".to_string(),
                Cell::Unreachable => "u".to_string(),
                Cell::Value(v) => palette_id(step(*v)),
            };
            let link = opts.links.filter(|_| row != col).map(|base| {
                let seg = super::escape::url_segment;
                format!("{base}{}/{}?kind={kind}", seg(names[row]), seg(names[col]))
            });
            if let Some(href) = &link {
                let _ = write!(out, "<a href=\"{}\">", xml(href));
            }
            let _ = write!(
                out,
                "<use href=\"#{id}\" x=\"{}\"><title>{}</title></use>",
                gx + col * c,
                xml(tip)
            );
            if link.is_some() {
                out.push_str("</a>");
            }
        }
        out.push_str("\n</g>\n");
    }

    // Outlines of anomalous cells, inside the cell so neighbours stay visible; a bar
    // beside the label of a region that has a region finding.
    if outlines.iter().any(Option::is_some) || !findings.regions.is_empty() {
        out.push_str("<g fill=\"none\">\n");
        for (k, o) in outlines.iter().enumerate() {
            let Some(sev) = o else { continue };
            let (colour, w) = severity_stroke(*sev);
            let (x, y) = (gx + (k % n) * c, gy + (k / n) * c);
            let half = w as f64 / 2.0;
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" stroke=\"{}\" stroke-width=\"{w}\"/>",
                x as f64 + half,
                y as f64 + half,
                c as f64 - 2.0 * half,
                c as f64 - 2.0 * half,
                colour.hex()
            );
        }
        for (name, outgoing, sev) in &findings.regions {
            let Some(pos) = names.iter().position(|n| n == name) else {
                continue;
            };
            let (colour, _) = severity_stroke(*sev);
            let (x, y, w, h) = if *outgoing {
                (gx - 4, gy + pos * c, 3, c)
            } else {
                (gx + pos * c, gy - 4, c, 3)
            };
            let _ = writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{}\"/>",
                colour.hex()
            );
        }
        out.push_str("</g>\n");
    }

    // Values, where a cell is large enough to read them.
    if c >= 36 {
        let _ = writeln!(
            out,
            "<g font-size=\"11\" text-anchor=\"middle\" dominant-baseline=\"central\">"
        );
        for (k, (cell, _)) in cells.iter().enumerate() {
            let Cell::Value(v) = cell else { continue };
            let (x, y) = (gx + (k % n) * c + c / 2, gy + (k / n) * c + c / 2);
            let ink = if scale.color(*v).luminance() > 0.35 {
                "#000000"
            } else {
                "#ffffff"
            };
            let text = match opts.view {
                View::Rtt => fmt_ms(*v),
                View::Loss => format!("{:.1}%", v * 100.0),
                View::Inflation => format!("{v:.1}×"),
                View::Delta => format!("{}{}", if *v > 0.0 { "+" } else { "" }, fmt_ms(*v)),
            };
            let _ = writeln!(
                out,
                "<text x=\"{x}\" y=\"{y}\" fill=\"{ink}\">{}</text>",
                xml(&text)
            );
        }
        out.push_str("</g>\n");
    }

    legend(&mut out, opts.view, &scale, lx, gy, bar_h);
    out.push_str("</svg>\n");
    Ok(out)
}

fn severity_stroke(s: Severity) -> (Rgb, u8) {
    match s {
        Severity::Warning => (scale::WARNING, 2),
        Severity::Critical => (scale::CRITICAL, 3),
    }
}

/// A path's findings, for its outline and tooltip.
struct PathFindings {
    severity: Severity,
    lines: Vec<String>,
}

/// The findings of one probe kind, arranged for drawing.
struct Findings<'r> {
    paths: BTreeMap<(&'r str, &'r str), PathFindings>,
    /// (region, outgoing?, severity) of region findings; `both` gives two entries.
    regions: Vec<(&'r str, bool, Severity)>,
    /// ((region, outgoing?), tooltip line) for the cells of a region's row or column.
    region_lines: Vec<((&'r str, bool), String)>,
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

fn scale_for(view: View, values: impl Iterator<Item = f64>) -> Scale {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    match view {
        View::Rtt => {
            let min = 10f64.powf(lo.max(0.1).log10().floor());
            let max = 10f64.powf(hi.max(min * 10.0).log10().ceil());
            let (min, max) = tighten(min, max, lo.max(0.1), hi);
            Scale {
                gradient: colorous::VIRIDIS,
                reversed: false,
                transform: Transform::Log,
                min,
                max,
            }
        }
        View::Loss => Scale {
            gradient: colorous::CIVIDIS,
            reversed: false,
            transform: Transform::Sqrt,
            min: 0.0,
            max: nice_up(hi.max(0.01)),
        },
        View::Inflation => Scale {
            gradient: colorous::PLASMA,
            reversed: false,
            transform: Transform::Linear,
            min: 1.0,
            max: nice_up(hi.max(4.0)),
        },
        View::Delta => Scale {
            gradient: colorous::RED_BLUE,
            reversed: true,
            transform: Transform::Diverging,
            min: -nice_up(lo.abs().max(hi.abs()).max(1.0)),
            max: nice_up(lo.abs().max(hi.abs()).max(1.0)),
        },
    }
}

/// Narrows a decade range to 1-2-5 steps that still hold `lo..=hi`.
fn tighten(min: f64, max: f64, lo: f64, hi: f64) -> (f64, f64) {
    let mut a = min;
    for m in [5.0, 2.0] {
        if min * m <= lo {
            a = min * m;
            break;
        }
    }
    let mut b = max;
    for m in [0.2, 0.5] {
        if max * m >= hi {
            b = max * m;
            break;
        }
    }
    if b <= a { (min, max) } else { (a, b) }
}

/// The 1-2-5 number at or above `v`.
fn nice_up(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|x| *x >= v * 0.9999)
        .unwrap_or(10.0 * p)
}

fn legend(out: &mut String, view: View, scale: &Scale, x: usize, y: usize, h: usize) {
    let unit = match view {
        View::Rtt => "p50 RTT, ms (log)",
        View::Loss => "loss, % (sqrt)",
        View::Inflation => "× fiber bound",
        View::Delta => "p50 change, ms",
    };
    let _ = write!(
        out,
        "<g font-size=\"11\" fill=\"#222222\">\n<text x=\"{x}\" y=\"{}\" font-weight=\"bold\">{unit}</text>\n",
        y - 10
    );
    let _ = writeln!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"16\" height=\"{h}\" fill=\"url(#lg)\" stroke=\"#666666\" stroke-width=\"0.5\"/>"
    );
    for v in scale.ticks() {
        let ty = y as f64 + h as f64 * (1.0 - scale.position(v));
        let label = match view {
            View::Rtt => fmt_tick(v),
            View::Loss => fmt_tick(v * 100.0),
            View::Inflation => format!("{}×", fmt_tick(v)),
            View::Delta => format!("{}{}", if v > 0.0 { "+" } else { "" }, fmt_tick(v)),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{ty:.1}\" x2=\"{}\" y2=\"{ty:.1}\" stroke=\"#222222\"/><text x=\"{}\" y=\"{ty:.1}\" dominant-baseline=\"central\">{label}</text>",
            x + 16,
            x + 20,
            x + 24
        );
    }
    let mut sy = y + h + 24;
    let swatch = |out: &mut String,
                  sy: usize,
                  fill: &str,
                  stroke: Option<(Rgb, u8)>,
                  text: &str| {
        let stroke = stroke
            .map(|(c, w)| format!(" stroke=\"{}\" stroke-width=\"{w}\"", c.hex()))
            .unwrap_or_else(|| " stroke=\"#666666\" stroke-width=\"0.5\"".into());
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{sy}\" width=\"14\" height=\"14\" fill=\"{fill}\"{stroke}/><text x=\"{}\" y=\"{}\" dominant-baseline=\"central\">{text}</text>",
            x + 22,
            sy + 7
        );
    };
    let _ = write!(
        out,
        "<line x1=\"{x}\" y1=\"{sy}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\"/>",
        x + 14,
        sy + 14,
        scale::DIAGONAL_LINE.hex()
    );
    swatch(out, sy, "none", None, "same region");
    sy += 20;
    swatch(out, sy, "url(#nd)", None, "no data");
    sy += 20;
    swatch(
        out,
        sy,
        &scale::UNREACHABLE.hex(),
        None,
        "unreachable (no reply)",
    );
    sy += 20;
    swatch(
        out,
        sy,
        "#ffffff",
        Some((scale::WARNING, 2)),
        "warning finding",
    );
    sy += 20;
    swatch(
        out,
        sy,
        "#ffffff",
        Some((scale::CRITICAL, 3)),
        "critical finding",
    );
    out.push_str("</g>\n");
}

fn fmt_tick(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else if (v * 10.0) == (v * 10.0).round() {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Row/column order as indices into `run.regions`.
fn order_regions(
    run: &Run,
    paths: &BTreeMap<(&str, &str), &PathEntry>,
    order: Order,
) -> Vec<usize> {
    let n = run.regions.len();
    let mut idx: Vec<usize> = (0..n).collect();
    match order {
        Order::Config => idx,
        Order::Geo => {
            idx.sort_by(|&a, &b| {
                let key = |i: usize| run.regions[i].location.map(|l| l.lon);
                match (key(a), key(b)) {
                    (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(&b)),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => a.cmp(&b),
                }
            });
            idx
        }
        Order::Cluster => cluster_order(run, paths),
    }
}

/// Leaves of an average-linkage dendrogram over the regions' RTT profiles: the
/// distance of two regions is the root mean square difference of log p50 RTT to and
/// from every third region that both measured.
fn cluster_order(run: &Run, paths: &BTreeMap<(&str, &str), &PathEntry>) -> Vec<usize> {
    let n = run.regions.len();
    if n < 3 {
        return (0..n).collect();
    }
    let names: Vec<&str> = run.regions.iter().map(|r| r.name.as_str()).collect();
    let lrtt = |a: usize, b: usize| -> Option<f64> {
        paths
            .get(&(names[a], names[b]))
            .and_then(|p| p.rtt_us)
            .map(|r| (r.p50.max(1) as f64).ln())
    };
    let mut condensed = Vec::with_capacity(n * (n - 1) / 2);
    for a in 0..n {
        for b in a + 1..n {
            let (mut sum, mut count) = (0.0, 0usize);
            for k in (0..n).filter(|&k| k != a && k != b) {
                for (x, y) in [(lrtt(a, k), lrtt(b, k)), (lrtt(k, a), lrtt(k, b))] {
                    if let (Some(x), Some(y)) = (x, y) {
                        sum += (x - y).powi(2);
                        count += 1;
                    }
                }
            }
            // Regions with nothing in common sort far apart.
            condensed.push(if count == 0 {
                1e6
            } else {
                (sum / count as f64).sqrt()
            });
        }
    }
    let dendrogram = kodama::linkage(&mut condensed, n, kodama::Method::Average);
    let steps = dendrogram.steps();
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![n + steps.len() - 1];
    while let Some(c) = stack.pop() {
        if c < n {
            order.push(c);
        } else {
            let step = &steps[c - n];
            stack.push(step.cluster2);
            stack.push(step.cluster1);
        }
    }
    order
}
