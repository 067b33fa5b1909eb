//! Colour scales of the heatmaps: perceptual gradients (from `colorous`, ports of
//! matplotlib's and ColorBrewer's maps), value transforms and legend ticks.
//!
//! The special cells (diagonal, no data, unreachable) use colours that are far from
//! every scale here, so a reader never mistakes them for a value.

use colorous::Gradient;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// Relative luminance (WCAG), to pick black or white text over a cell.
    pub fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }
}

/// The diagonal (a region to itself): white, crossed by a grey line from corner to
/// corner. A pattern, not a fill, so it cannot pass for a value.
pub const DIAGONAL: Rgb = Rgb(0xff, 0xff, 0xff);
pub const DIAGONAL_LINE: Rgb = Rgb(0x96, 0x96, 0x96);
/// No data (the source did not report, the path was not measured, or the value needs
/// what the run lacks, such as a location): white, hatched in grey stripes.
pub const NO_DATA: Rgb = Rgb(0xff, 0xff, 0xff);
pub const NO_DATA_HATCH: Rgb = Rgb(0x9e, 0x9e, 0x9e);
/// Unreachable (probes sent, nothing came back): black, the solid colour farthest from
/// every scale here.
pub const UNREACHABLE: Rgb = Rgb(0, 0, 0);
/// Outlines of anomalous cells.
pub const WARNING: Rgb = Rgb(0xff, 0x8c, 0x00);
pub const CRITICAL: Rgb = Rgb(0xe4, 0x1a, 0x1c);

/// How values map onto `0..=1` before the gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    Linear,
    /// Logarithmic: equal ratios get equal steps (RTTs from 1 to 300 ms).
    Log,
    /// Square root: small values get more room (loss near 0%).
    Sqrt,
    /// Symmetric around zero (deltas).
    Diverging,
}

/// A value-to-colour scale with its domain.
#[derive(Clone, Copy)]
pub struct Scale {
    pub gradient: Gradient,
    /// Draw the gradient from its end to its start.
    pub reversed: bool,
    pub transform: Transform,
    pub min: f64,
    pub max: f64,
}

impl Scale {
    /// Position of `v` on the scale, `0..=1` (clamped).
    pub fn position(&self, v: f64) -> f64 {
        let t = match self.transform {
            Transform::Linear => (v - self.min) / (self.max - self.min),
            Transform::Log => {
                let lo = self.min.max(1e-9).ln();
                (v.max(1e-9).ln() - lo) / (self.max.max(1e-9).ln() - lo)
            }
            Transform::Sqrt => {
                (v.max(0.0).sqrt() - self.min.max(0.0).sqrt())
                    / (self.max.sqrt() - self.min.max(0.0).sqrt())
            }
            Transform::Diverging => 0.5 + v / (2.0 * self.max.abs().max(f64::MIN_POSITIVE)),
        };
        if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The colour at position `t` (`0..=1`) of the gradient.
    pub fn at(&self, t: f64) -> Rgb {
        let t = if self.reversed { 1.0 - t } else { t };
        let c = self.gradient.eval_continuous(t.clamp(0.0, 1.0));
        Rgb(c.r, c.g, c.b)
    }

    pub fn color(&self, v: f64) -> Rgb {
        self.at(self.position(v))
    }

    /// Round values inside the domain for the legend (1-2-5 steps, both ends included).
    pub fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        match self.transform {
            Transform::Log => {
                let mut decade = 10f64.powf(self.min.max(1e-9).log10().floor());
                while decade <= self.max * 1.0001 {
                    for m in [1.0, 2.0, 5.0] {
                        let v = decade * m;
                        if v >= self.min * 0.9999 && v <= self.max * 1.0001 {
                            ticks.push(v);
                        }
                    }
                    decade *= 10.0;
                }
            }
            Transform::Diverging => {
                let step = nice_step(self.max * 2.0 / 4.0);
                let mut v = -(self.max / step).floor() * step;
                while v <= self.max + 1e-9 {
                    ticks.push(if v.abs() < 1e-9 { 0.0 } else { v });
                    v += step;
                }
            }
            Transform::Linear | Transform::Sqrt => {
                let step = nice_step((self.max - self.min) / 4.0);
                let mut v = (self.min / step).ceil() * step;
                while v <= self.max + 1e-9 {
                    ticks.push(v);
                    v += step;
                }
            }
        }
        if ticks.len() < 2 {
            ticks = vec![self.min, self.max];
        }
        ticks
    }
}

/// The 1, 2 or 5 times a power of ten nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(a: Rgb, b: Rgb) -> f64 {
        let d = |x: u8, y: u8| f64::from(x) - f64::from(y);
        (d(a.0, b.0).powi(2) + d(a.1, b.1).powi(2) + d(a.2, b.2).powi(2)).sqrt()
    }

    #[test]
    fn unreachable_is_far_from_every_scale_colour() {
        // The diagonal and "no data" are patterns; unreachable is the one solid special.
        for g in [
            colorous::VIRIDIS,
            colorous::CIVIDIS,
            colorous::PLASMA,
            colorous::RED_BLUE,
        ] {
            for i in 0..=1000 {
                let c = g.eval_continuous(f64::from(i) / 1000.0);
                let c = Rgb(c.r, c.g, c.b);
                assert!(dist(c, UNREACHABLE) > 80.0, "unreachable is close to {c:?}");
            }
        }
    }

    #[test]
    fn positions_and_ticks() {
        let log = Scale {
            gradient: colorous::VIRIDIS,
            reversed: false,
            transform: Transform::Log,
            min: 1.0,
            max: 100.0,
        };
        assert_eq!(log.position(10.0), 0.5);
        assert_eq!(log.position(0.1), 0.0);
        assert_eq!(log.ticks(), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        let div = Scale {
            gradient: colorous::RED_BLUE,
            reversed: true,
            transform: Transform::Diverging,
            min: -20.0,
            max: 20.0,
        };
        assert_eq!(div.position(0.0), 0.5);
        assert_eq!(div.position(-20.0), 0.0);
        assert_eq!(div.ticks(), vec![-20.0, -10.0, 0.0, 10.0, 20.0]);
        let lin = Scale {
            gradient: colorous::CIVIDIS,
            reversed: false,
            transform: Transform::Sqrt,
            min: 0.0,
            max: 4.0,
        };
        assert_eq!(lin.position(1.0), 0.5);
        assert_eq!(lin.ticks(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
