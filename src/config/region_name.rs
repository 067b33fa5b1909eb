//! [`RegionName`]: the one rule for a region's name, which the configuration, region
//! reports, runs, the wire format and the aggregator all apply.
//!
//! Names are kebab-case by convention (`eu-west-1`), but any readable name is allowed,
//! so that a published matrix whose header says `Europe (Ireland)` works as it is. What
//! a name becomes decides what is refused rather than escaped: it is a file name on the
//! aggregator (`reports/RUN/REGION.json`), so no `/`, `\`, leading `.` (no `..`, no
//! hidden file) and at most 200 bytes; a CSV cell and a Markdown table cell, so no `,`,
//! `|` or `"`; and text shown to a person, so no control, bidirectional or invisible
//! characters (zero-width spaces, a byte-order mark, line separators), and only one
//! way to write it: Unicode normal form C, so that "é" is one region, not two.
//! Everything else (spaces, parentheses, letters of any script) is kept, and escaped
//! where it goes: HTML, XML, Markdown, Prometheus labels and URLs (percent-encoding)
//! each escape it in their own way.

use serde::{Deserialize, Serialize};

/// Longest region name, in characters.
pub const MAX_NAME_LEN: usize = 63;

/// The most regions a fleet, a region report or a run may list. A run's drawings and
/// pages grow with the square of its regions (a 1,000-region heatmap is a million
/// cells); without a cap one small report listing many invented regions would make
/// every read of its run huge.
pub const MAX_REGIONS: usize = 1000;

/// A region's name that follows the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionName(String);

impl TryFrom<String> for RegionName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        match RegionName::problem(&name) {
            None => Ok(RegionName(name)),
            Some(why) => Err(why),
        }
    }
}

impl From<RegionName> for String {
    fn from(name: RegionName) -> String {
        name.0
    }
}

impl std::fmt::Display for RegionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters a region name may not contain: they would break file names
/// (`REGION.json`), CSV cells or Markdown tables.
const NAME_FORBIDDEN: &[char] = &['/', '\\', '|', ',', '"'];

/// Longest region name in bytes of UTF-8: the name is a file name on the aggregator
/// (`REGION.json`, and a temporary file beside it), which Linux limits to 255 bytes.
const MAX_NAME_BYTES: usize = 200;

/// Characters that reorder the text around them when shown (bidirectional overrides,
/// embeddings, isolates and marks): a name holding one would read differently from
/// what it is. Region names may not hold them; outputs escape them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that show as nothing (or as a line break) and so make two names that
/// read the same: zero-width spaces and joiners, the byte-order mark, the soft
/// hyphen, word joiners and invisible operators, variation selectors, Hangul fillers
/// and the line and paragraph separators. Region names may not hold them.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

impl RegionName {
    /// `name`, if it follows the rule; else why not, in words for the user.
    pub fn new(name: &str) -> Result<RegionName, String> {
        match RegionName::problem(name) {
            None => Ok(RegionName(name.to_string())),
            Some(why) => Err(why),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why `name` cannot be a region name, if it cannot: the rule itself.
    pub fn problem(name: &str) -> Option<String> {
        let allowed = "1 to 63 characters, no control characters and none of / \\ | , \", not starting with '-' or '.' or a space";
        if name.is_empty() {
            return Some(format!("a region name is empty; use {allowed}"));
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Some(format!(
                "region name {} is longer than {MAX_NAME_LEN} characters; shorten it",
                super::diag::quote(name)
            ));
        }
        if name.len() > MAX_NAME_BYTES {
            return Some(format!(
                "region name {name:?} is longer than {MAX_NAME_BYTES} bytes of UTF-8; shorten it"
            ));
        }
        if let Some(c) = name.chars().find(|&c| {
            c.is_control() || is_bidi_control(c) || is_invisible(c) || NAME_FORBIDDEN.contains(&c)
        }) {
            return Some(format!(
                "region name {name:?} contains {c:?}; use {allowed}"
            ));
        }
        // One way to write each name: "é" as one character, not "e" and an accent,
        // which would look the same and be another region.
        if !unicode_normalization::is_nfc(name) {
            use unicode_normalization::UnicodeNormalization;
            return Some(format!(
                "region name {name:?} is not in Unicode normal form C; write it as {:?} (the same letters, composed)",
                name.nfc().collect::<String>()
            ));
        }
        if name.starts_with(['-', '.'])
            || name.starts_with(char::is_whitespace)
            || name.ends_with(char::is_whitespace)
        {
            return Some(format!(
                "region name {name:?} starts or ends with {:?}; use {allowed}",
                if name.ends_with(char::is_whitespace) {
                    ' '
                } else {
                    name.chars().next().unwrap_or(' ')
                }
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_names_pass_and_unsafe_ones_are_refused() {
        for good in [
            "eu-west-1",
            "Europe (Ireland)",
            "US East",
            "São Paulo",
            "東京",
            "a.b_c",
        ] {
            assert_eq!(
                RegionName::new(good).map(|n| n.to_string()),
                Ok(good.to_string())
            );
        }
        for (bad, why) in [
            ("", "a region name is empty"),
            ("..", "starts or ends with '.'"),
            (".hidden", "starts or ends with '.'"),
            ("-x", "starts or ends with '-'"),
            (" x", "starts or ends with ' '"),
            ("x ", "starts or ends with ' '"),
            ("a/b", "contains '/'"),
            ("a\\b", "contains '\\\\'"),
            ("../etc", "contains '/'"),
            ("a|b", "contains '|'"),
            ("a,b", "contains ','"),
            ("a\"b", "contains '\"'"),
            ("a\u{1b}[2J", "contains '\\u{1b}'"),
            ("abc\u{202e}fed", "contains '\\u{202e}'"),
            ("eu-west-1\u{200b}", "contains '\\u{200b}'"),
            ("\u{feff}bom", "contains '\\u{feff}'"),
            ("x\u{2028}y", "contains '\\u{2028}'"),
            ("soft\u{ad}hyphen", "contains '\\u{ad}'"),
            (
                "e\u{301}",
                "not in Unicode normal form C; write it as \"é\"",
            ),
        ] {
            let e = RegionName::new(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(
            RegionName::new(&long)
                .unwrap_err()
                .contains("longer than 63 characters")
        );
        assert!(RegionName::new(&"é".repeat(60)).is_ok());
        assert!(
            RegionName::new(&"😀".repeat(60))
                .unwrap_err()
                .contains("bytes of UTF-8")
        );
    }

    #[test]
    fn serde_applies_the_rule() {
        let n: RegionName = serde_json::from_str("\"US East\"").unwrap();
        assert_eq!(n.as_str(), "US East");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"US East\"");
        let e = serde_json::from_str::<RegionName>("\"a/b\"").unwrap_err();
        assert!(e.to_string().contains("contains '/'"), "{e}");
    }
}
