//! "Did you mean": the closest of a few known words to a misspelt one.
//!
//! Used for unknown keys, probe kinds and region names. Pure string functions; they know
//! nothing of the configuration.

/// `"a", "b" and "c"`.
pub(super) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// The candidate closest to `word`, if close enough to be a likely misspelling:
/// at most one edit per three characters (a swap of two letters is one edit), a
/// different case, `-` for `_`, or a prefix of at least three characters.
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let norm = |s: &str| s.to_lowercase().replace('-', "_");
    let w = norm(word);
    let mut best: Option<(usize, &'c str)> = None;
    let w_len = w.chars().count();
    for &c in candidates {
        let n = norm(c);
        let n_len = n.chars().count();
        let limit = (n_len / 3).max(1);
        let prefix = w_len >= 3 && (n.starts_with(&w) || w.starts_with(&n));
        // The distance is at least the difference in length: skip the table (a
        // 50 MB key must not build a 50-million-row one).
        if w_len.abs_diff(n_len) > limit && !prefix {
            continue;
        }
        let d = if w_len.abs_diff(n_len) > limit {
            usize::MAX
        } else {
            edit_distance(&w, &n)
        };
        if (d <= limit || prefix) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two adjacent characters each cost one.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| {
            (0..=b.len())
                .map(|j| {
                    if i == 0 {
                        j
                    } else if j == 0 {
                        i
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{FAULT_KEYS, LAB_KEYS, PROBE_KEYS, TOP_KEYS};

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("count", "count", 0),
            ("cuont", "count", 1),
            ("cont", "count", 1),
            ("counts", "count", 1),
            ("", "abc", 3),
            ("kitten", "sitting", 3),
            ("ça", "ca", 1),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} -> {b}");
        }
    }

    #[test]
    fn suggestions() {
        for (word, expected) in [
            ("cuont", Some("count")),
            ("intervall", Some("interval")),
            ("time_out", Some("timeout")),
            ("Timeout", Some("timeout")),
            ("kind", Some("kinds")),
            ("regions", None), // not a probe key
            ("colour", None),
            ("x", None),
        ] {
            assert_eq!(closest(word, PROBE_KEYS), expected, "{word}");
        }
        assert_eq!(closest("regions", TOP_KEYS), Some("region"));
        assert_eq!(closest("jitter", LAB_KEYS), Some("jitter_ms"));
        assert_eq!(closest("jitter-ms", LAB_KEYS), Some("jitter_ms"));
        assert_eq!(closest("faults", LAB_KEYS), Some("fault"));
        assert_eq!(closest("loss", FAULT_KEYS), Some("loss_pct"));
        assert_eq!(closest("both", FAULT_KEYS), Some("both_directions"));
    }

    #[test]
    fn lists() {
        assert_eq!(list(&[]), "");
        assert_eq!(list(&["a"]), "\"a\"");
        assert_eq!(list(&["a", "b", "c"]), "\"a\", \"b\" and \"c\"");
    }
}
