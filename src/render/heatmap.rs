//! SVG heatmaps of a run: rows are source regions, columns target regions.
//!
//! Written by hand rather than through a plotting library: every cell carries a
//! `<title>` tooltip and the file must stay small (a 100-region map under 1 MiB), which
//! a general plotting backend does not give. Colours come from perceptual scales
//! ([`super::scale`]); the diagonal, "no data" and "unreachable" are drawn with
//! colours and patterns outside every scale, and the legend explains them. Output is
//! deterministic: the same run gives the same bytes.
//!
//! Split by concern: `model` turns the run into cells and tooltips, `order` orders
//! the regions, `layout` sizes the picture, `legend` picks the colour scale and
//! draws its key, and `svg` writes the document.

mod layout;
mod legend;
mod model;
mod order;
mod svg;

use crate::config::ProbeKind;
use crate::run::Run;

pub use model::default_kind;

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

/// Renders the heatmap as an SVG document.
pub fn heatmap_svg(run: &Run, opts: &Options) -> Result<String, HeatmapError> {
    if run.regions.is_empty() {
        return Err(HeatmapError::Empty);
    }
    if opts.view == View::Delta && opts.baseline.is_none() {
        return Err(HeatmapError::NoBaseline);
    }
    let model = model::Model::build(run, opts);
    let layout = layout::Layout::of(run, opts, &model);
    Ok(svg::write(opts, &model, &layout))
}
