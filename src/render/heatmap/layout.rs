//! The heatmap's geometry: cell size, label room, where the grid and the legend go,
//! the title, and the size of the picture. Numbers only; nothing is written here.

use super::model::Model;
use super::{Options, View};
use crate::run::Run;

/// Sizes and positions, in pixels.
pub(super) struct Layout {
    /// The side of a cell.
    pub c: usize,
    pub font: usize,
    /// The grid's top-left corner.
    pub gx: usize,
    pub gy: usize,
    /// The legend's left edge and its colour bar's height.
    pub lx: usize,
    pub bar_h: usize,
    pub width: usize,
    pub height: usize,
    pub title: String,
}

impl Layout {
    pub fn of(run: &Run, opts: &Options, model: &Model<'_>) -> Layout {
        let (n, names, kind) = (model.names.len(), &model.names, model.kind);
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
        Layout {
            c,
            font,
            gx,
            gy,
            lx,
            bar_h,
            width,
            height,
            title,
        }
    }
}
