//! Escaping for every output format, in one place: Markdown text and code spans, XML
//! (SVG, JUnit), the terminal, and Prometheus label values. Every string that came from
//! outside latmap (region names, run ids, target specs, messages, addresses) goes
//! through one of these before it is printed; JSON output is escaped by serde_json.
//!
//! Pure functions over strings; nothing here knows a run or a format's layout. Each
//! escaper keeps printable text as it is, so that ordinary names read the same in
//! every output, and is idempotent on its own output where that matters (the
//! terminal's).

use std::borrow::Cow;
use std::fmt::Write;

/// The character shown in place of one an output cannot carry.
const REPLACEMENT: char = '\u{FFFD}';

/// Characters that reorder the text around them (bidirectional overrides, embeddings
/// and isolates): a terminal or a viewer would show a name in another order than its
/// bytes ("Trojan Source", CVE-2021-42574). The configuration's name rule refuses them.
use crate::config::is_bidi_control;

/// A control character: C0, DEL or C1 (which includes the one-byte CSI, U+009B).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Inline Markdown text, safe in a paragraph, a heading, a list item and a table cell
/// (CommonMark and GitHub Flavored Markdown): HTML is shown, not interpreted (`<`, `>`
/// and `&` become entities), the characters that start emphasis, links, autolinks,
/// images, code, strikethrough, math, headings and table cells are backslash-escaped
/// (`@` always, `:` before anything but a space, so `host:port` reads `host\:port` in
/// the file, and shows as it was), and line breaks and other control characters
/// become one space or U+FFFD, so the text stays on its line.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' | '$' | '@' => {
                out.push('\\');
                out.push(c);
            }
            // GitHub's autolinks: `http://`, `mailto:x` and the like need a bare `:`
            // before a non-space, an e-mail address a bare `@` (escaped above), and
            // `www.` a bare dot after it; escaped, they stay text (a `:` before a
            // space or at the end cannot start one, and is left for the reader).
            ':' if next.is_some_and(|n| !n.is_whitespace()) => {
                out.push('\\');
                out.push(c);
            }
            '.' if out.len() >= 3
                && out.as_bytes()[out.len() - 3..].eq_ignore_ascii_case(b"www") =>
            {
                out.push_str("\\.");
            }
            // At the start of a cell or a list item these start a list or a heading
            // underline; elsewhere they are plain.
            '-' | '+' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_control(c) || is_bidi_control(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// A complete Markdown code span (backticks included) showing `s` literally, outside
/// a table: the fence is one backtick longer than the longest run of backticks in `s`,
/// padded with a space when `s` starts or ends with a backtick, so `s` cannot close it;
/// line breaks and control characters are replaced as in [`markdown`].
pub fn markdown_code(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if is_control(c) || is_bidi_control(c) => REPLACEMENT,
            c => c,
        })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in clean.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    let pad = if clean.starts_with('`') || clean.ends_with('`') || clean.trim().is_empty() {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{clean}{pad}{fence}")
}

/// Text for XML 1.0 element content and attribute values (SVG, JUnit): the five
/// special characters become entities; characters XML 1.0 cannot carry at all (C0
/// controls other than tab, line feed and carriage return, U+FFFE, U+FFFF) and the
/// discouraged C1 controls and bidirectional controls become U+FFFD, so the document
/// stays well-formed whatever the input.
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Kept, but as references, so attribute-value normalisation keeps them.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{FFFE}' | '\u{FFFF}' => out.push(REPLACEMENT),
            c if is_control(c) || is_bidi_control(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Text for a terminal or a log: every control character except line feed and tab
/// (escape sequences, carriage returns, backspaces, the C1 controls) and every
/// bidirectional control is written as a visible escape (`\u{1b}`), so printing the
/// text can neither move the cursor, recolour the screen, retitle the window nor
/// reorder what is shown. Printable text is returned as it is, without copying.
pub fn terminal(s: &str) -> Cow<'_, str> {
    let keep = |c: char| c == '\n' || c == '\t' || !(is_control(c) || is_bidi_control(c));
    if s.chars().all(keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if keep(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// One line of terminal text: as [`terminal`], and line feeds and tabs are escaped too,
/// so the value cannot start a line of its own (for values inside a log line or a
/// one-line message).
pub fn terminal_line(s: &str) -> Cow<'_, str> {
    match terminal(s) {
        Cow::Borrowed(b) if !b.contains(['\n', '\t']) => Cow::Borrowed(b),
        other => Cow::Owned(other.replace('\n', "\\n").replace('\t', "\\t")),
    }
}

/// A Prometheus label value (text exposition format 0.0.4): backslash, double quote
/// and line feed are escaped as the format asks; other control characters become
/// U+FFFD.
pub fn prometheus_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if is_control(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// A name as one segment of a URL's path (or a query value): everything but RFC 3986's
/// unreserved characters percent-encoded, so `/`, `?`, `#`, `&` and spaces cannot
/// change where a link leads.
pub fn url_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_shows_html_and_syntax_literally() {
        for (input, expected) in [
            ("eu-west-1", "eu-west-1"),
            ("Europe (Ireland)", "Europe (Ireland)"),
            (
                "<img src=x onerror=alert(1)>",
                "&lt;img src=x onerror=alert(1)&gt;",
            ),
            ("a|b", "a\\|b"),
            ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
            ("[x](http://e)", "\\[x\\](http\\://e)"),
            ("www.x WwW.y wwx.z", "www\\.x WwW\\.y wwx.z"),
            ("a@b:c d: e:", "a\\@b\\:c d: e:"),
            // A dot after multi-byte characters: the fuzz corpus's lab run made a first
            // version slice one of them.
            ("éé. →→. éwww.", "éé. →→. éwww\\."),
            ("![i](u)", "\\!\\[i\\](u)"),
            ("`code`", "\\`code\\`"),
            ("a\n### h", "a \\#\\#\\# h"),
            ("- item", "\\- item"),
            ("a - b", "a - b"),
            ("x\u{1b}[31my", "x\u{FFFD}\\[31my"),
            ("$x$ ~~s~~ &amp;", "\\$x\\$ \\~\\~s\\~\\~ &amp;amp;"),
            ("a\\", "a\\\\"),
        ] {
            assert_eq!(markdown(input), expected, "{input:?}");
        }
    }

    /// What a GitHub Flavored Markdown renderer (comrak, with GitHub's extensions and
    /// `$` math) makes of `text`, in a paragraph and in a table cell.
    fn rendered(text: &str) -> [String; 2] {
        let mut o = comrak::Options::default();
        o.extension.strikethrough = true;
        o.extension.table = true;
        o.extension.autolink = true;
        o.extension.tasklist = true;
        o.extension.footnotes = true;
        o.extension.math_dollars = true;
        [
            comrak::markdown_to_html(&format!("x {text} y\n"), &o),
            comrak::markdown_to_html(&format!("| a | b |\n| --- | --- |\n| {text} | z |\n"), &o),
        ]
    }

    #[test]
    fn hostile_text_renders_as_text_in_a_real_markdown_renderer() {
        for input in [
            "<img src=x onerror=alert(1)>",
            "<script>alert(1)</script>",
            "http://evil.example/login",
            "HTTPS://evil.example",
            "ftp://evil.example",
            "www.evil.example",
            "WWW.evil.example",
            "ops@evil.example",
            "mailto:ops@evil.example",
            "xmpp:ops@evil.example",
            "[x](http://e) ![i](u) [^1] [ ]",
            "**b** _i_ ~~s~~ ~s~ $x$ `c` ^s^",
            "a | b || c",
            "a\n# h\n- li",
            "<http://evil.example>",
            "&lt;b&gt; &#60;b&#62;",
        ] {
            let [paragraph, table] = rendered(&markdown(input));
            // The text stays in its paragraph, and in its one cell of the table's row.
            assert!(!paragraph.contains("<td"), "{input:?} -> {paragraph:?}");
            assert_eq!(table.matches("<td").count(), 2, "{input:?} -> {table:?}");
            for html in [paragraph, table] {
                for tag in [
                    "<a", "<img", "<script", "<em", "<strong", "<del", "<code", "<h1", "<li",
                    "<sup", "<span", "<section", "<input",
                ] {
                    assert!(!html.contains(tag), "{input:?} -> {html:?}");
                }
            }
        }
    }

    #[test]
    fn code_spans_cannot_be_closed_from_inside() {
        assert_eq!(markdown_code("20261126T050000Z"), "`20261126T050000Z`");
        assert_eq!(markdown_code("a`b"), "``a`b``");
        assert_eq!(markdown_code("`x``"), "``` `x`` ```");
        assert_eq!(markdown_code("x`\n### Injected"), "``x` ### Injected``");
        assert_eq!(markdown_code(""), "`  `");
        // Whatever the input, the span is the whole output: it starts and ends with a
        // fence longer than any run of backticks inside.
        for s in ["```", "a``b`c", "` ", " `"] {
            let out = markdown_code(s);
            let fence = out.chars().take_while(|&c| c == '`').count();
            let inner = &out[fence..out.len() - fence];
            assert!(!inner.contains(&"`".repeat(fence)), "{s:?} -> {out:?}");
        }
    }

    #[test]
    fn xml_is_well_formed_for_any_input() {
        assert_eq!(xml("a<b>&\"c\"'"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;");
        assert_eq!(xml("x\u{0}y\u{1b}z\u{FFFF}"), "x\u{FFFD}y\u{FFFD}z\u{FFFD}");
        assert_eq!(xml("l1\nl2\tx"), "l1&#10;l2&#9;x");
        let hostile: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let doc = format!("<r a=\"{}\">{}</r>", xml(&hostile), xml(&hostile));
        let parsed = roxmltree::Document::parse(&doc).expect("well-formed");
        assert!(parsed.root_element().attribute("a").is_some());
    }

    #[test]
    fn terminal_text_cannot_carry_escape_sequences() {
        assert!(matches!(terminal("eu-west-1 → b\n"), Cow::Borrowed(_)));
        assert_eq!(terminal("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(terminal("x\ry\u{9b}z\u{7f}"), "x\\u{d}y\\u{9b}z\\u{7f}");
        assert_eq!(terminal("abc\u{202E}fed"), "abc\\u{202e}fed");
        assert_eq!(terminal("keep\ttabs\nand lines"), "keep\ttabs\nand lines");
        // Idempotent: escaping the output again changes nothing.
        let once = terminal("\u{1b}]0;title\u{7}").into_owned();
        assert_eq!(terminal(&once), once.as_str());
        assert_eq!(terminal_line("a\nb\tc"), "a\\nb\\tc");
    }

    #[test]
    fn prometheus_labels() {
        assert_eq!(
            prometheus_label("a\"b\\c\nd\u{1}"),
            "a\\\"b\\\\c\\nd\u{FFFD}"
        );
    }
}
