//! How latmap writes its quantities for people: milliseconds from microseconds, with
//! one rule for every table, report, message, tooltip and diff, and the speed of light
//! in fiber that the `inflation` detector, the heatmap and the geo lab share.
//!
//! Pure functions over numbers; nothing here knows a run or an output format (the
//! formats escape and lay out what these return).

/// Kilometres of great-circle distance per millisecond of round trip in fiber: light
/// in fiber covers about 200,000 km/s, so a round trip covers 100 km per ms.
pub const FIBER_KM_PER_MS: f64 = 100.0;

/// The fiber bound of a great-circle distance: the shortest round trip, in ms.
pub fn fiber_bound_ms(km: f64) -> f64 {
    km / FIBER_KM_PER_MS
}

/// Milliseconds as a number: whole from 100 ms (`233`), one decimal below (`12.3`).
pub fn ms(ms: f64) -> String {
    ms_whole_from(ms, 100.0)
}

/// Milliseconds as a number, whole from `whole_from` ms and with one decimal below
/// (tooltips, which are narrow, go whole from 10 ms).
pub fn ms_whole_from(ms: f64, whole_from: f64) -> String {
    if ms.abs() >= whole_from {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

/// Microseconds as milliseconds, by [`ms`].
pub fn us_as_ms(us: f64) -> String {
    ms(us / 1000.0)
}

/// A change in microseconds as signed milliseconds with one decimal: `+1.5`, `-0.3`.
pub fn signed_ms(us: i64) -> String {
    format!("{:+.1}", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_the_same_everywhere() {
        let cases = [
            (0.0, "0.0"),
            (0.04, "0.0"),
            (12.34, "12.3"),
            (99.94, "99.9"),
            (100.0, "100"),
            (233.4, "233"),
            (-150.0, "-150"),
            (-12.34, "-12.3"),
        ];
        for (v, want) in cases {
            assert_eq!(ms(v), want, "{v}");
        }
        assert_eq!(us_as_ms(12_340.0), "12.3");
        assert_eq!(ms_whole_from(12.34, 10.0), "12");
        assert_eq!(ms_whole_from(9.94, 10.0), "9.9");
        assert_eq!(signed_ms(1500), "+1.5");
        assert_eq!(signed_ms(-300), "-0.3");
        assert_eq!(signed_ms(0), "+0.0");
    }

    #[test]
    fn the_fiber_bound() {
        // London to New York, about 5,570 km: at least 55.7 ms of round trip.
        assert!((fiber_bound_ms(5570.0) - 55.7).abs() < 1e-9);
    }
}
