//! "Did you mean": the closest of a few known words to a misspelt one.
//!
//! Used for unknown keys, probe kinds and region names. Pure string functions over
//! `strsim`'s edit distance; they know nothing of the configuration.

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
            // Optimal string alignment: a swap of two adjacent letters is one edit.
            strsim::osa_distance(&w, &n)
        };
        if (d <= limit || prefix) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys;

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
            assert_eq!(
                closest(word, &keys::probe::SECTION.names()),
                expected,
                "{word}"
            );
        }
        assert_eq!(
            closest("regions", &keys::top::SECTION.names()),
            Some("region")
        );
        assert_eq!(
            closest("jitter", &keys::lab::SECTION.names()),
            Some("jitter_ms")
        );
        assert_eq!(
            closest("jitter-ms", &keys::lab::SECTION.names()),
            Some("jitter_ms")
        );
        assert_eq!(
            closest("faults", &keys::lab::SECTION.names()),
            Some("fault")
        );
        assert_eq!(
            closest("loss", &keys::fault::SECTION.names()),
            Some("loss_pct")
        );
        assert_eq!(
            closest("both", &keys::fault::SECTION.names()),
            Some("both_directions")
        );
    }

    #[test]
    fn lists() {
        assert_eq!(list(&[]), "");
        assert_eq!(list(&["a"]), "\"a\"");
        assert_eq!(list(&["a", "b", "c"]), "\"a\", \"b\" and \"c\"");
    }
}
