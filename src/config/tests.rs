//! Tests of the whole loader: validation rules as tables of small configurations, the
//! good fixtures under `tests/fixtures/config/`, and a little fuzzing (no input panics).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A valid fleet of two regions; cases append to it or replace parts of it.
const FLEET: &str = r#"
[[region]]
name = "a"
targets = ["10.0.0.1:80"]

[[region]]
name = "b"
targets = ["b.example.com:80"]
"#;

/// A valid geo lab of two regions.
const GEO_LAB: &str = r#"
[lab]

[[region]]
name = "a"
location = { lat = 10, lon = 20 }

[[region]]
name = "b"
location = { lat = -10.5, lon = -20.5 }
"#;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// The diagnostics of `text`, one string each (empty if it loads).
fn problems(text: &str) -> Vec<String> {
    match parse(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// Runs a table of `(text, expected)`: `None` means the text must load; `Some(s)` means
/// exactly one diagnostic, containing `s`.
fn check_table(cases: &[(String, Option<&str>)]) {
    for (text, expected) in cases {
        let got = problems(text);
        match expected {
            None => assert!(got.is_empty(), "{text}\nshould load, but: {got:#?}"),
            Some(want) => assert!(
                got.len() == 1 && got[0].contains(want),
                "{text}\nwanted one problem containing {want:?}, got {got:#?}"
            ),
        }
    }
}

fn with_probe(probe: &str) -> String {
    format!("[probe]\n{probe}\n{FLEET}")
}

#[test]
fn probe_rules() {
    let cases: Vec<(String, Option<&str>)> = [
        ("count = 1", None),
        ("count = 1_000_000", None),
        (
            "count = 0",
            Some("t.toml:2:9: count is out of range; use a whole number from 1 to 1000000"),
        ),
        ("count = 1_000_001", Some("count is out of range")),
        ("count = -5", Some("count is out of range")),
        ("count = 1e3", Some("count must be a whole number")),
        ("interval = \"1m 30s\"", None),
        ("interval = \"250ms\"", None),
        ("interval = \"0s\"", None),
        (
            "interval = 100",
            Some("durations are strings with a unit, like \"250ms\" or \"1s\""),
        ),
        ("interval = 0.5", Some("durations are strings with a unit")),
        (
            "interval = \"fast\"",
            Some("interval = \"fast\" is not a duration"),
        ),
        ("interval = \"\"", Some("interval is empty")),
        (
            "interval = \"100\"",
            Some("has no unit; write it like \"100ms\" or \"100s\""),
        ),
        ("interval = \"-1s\"", Some("is not a duration")),
        (
            "interval = \"99999999999999999999999s\"",
            Some("is too large"),
        ),
        ("gap = \"0s\"", None),
        (
            "gap = \"3 lightyears\"",
            Some("unknown unit \"lightyears\""),
        ),
        ("timeout = \"60s\"", None),
        ("timeout = \"60001ms\"", Some("timeout is out of range")),
        ("timeout = \"0ms\"", Some("timeout is out of range")),
        ("payload = 0", None),
        ("payload = 1400", None),
        (
            "payload = 1401",
            Some("payload is out of range; use a whole number from 0 to 1400"),
        ),
        ("kinds = [\"icmp\", \"udp\", \"tcp\"]", None),
        ("kinds = []", Some("kinds is empty")),
        (
            "kinds = [\"udp\", \"udp\"]",
            Some("probe kind \"udp\" is listed twice"),
        ),
        (
            "kinds = [\"ICMP\"]",
            Some("unknown probe kind \"ICMP\"; did you mean \"icmp\"?"),
        ),
        (
            "kinds = [\"quic\"]",
            Some("unknown probe kind \"quic\"; use \"icmp\", \"udp\" and \"tcp\""),
        ),
        (
            "kinds = \"icmp\"",
            Some("kinds must be a list of strings, not a string"),
        ),
        (
            "cuont = 5",
            Some("t.toml:2:1: unknown key \"cuont\" in [probe]; did you mean \"count\"?"),
        ),
        (
            "retries = 5",
            Some("unknown key \"retries\" in [probe]; the keys allowed here are"),
        ),
    ]
    .into_iter()
    .map(|(probe, want)| (with_probe(probe), want))
    .collect();
    check_table(&cases);
}

#[test]
fn region_rules() {
    let region = |body: &str| format!("{FLEET}\n[[region]]\n{body}\n");
    let cases: Vec<(String, Option<&str>)> = [
        ("name = \"c\"\ntargets = [\"10.0.0.3\"]", None),
        ("name = \"A.b_c-9\"\ntargets = [\"::1\"]", None),
        (
            "name = \"a\"\ntargets = [\"10.0.0.3\"]",
            Some("region \"a\" defined twice (first at line 3); rename one"),
        ),
        (
            "name = \"-c\"\ntargets = [\"10.0.0.3\"]",
            Some("starts or ends with '-'"),
        ),
        (
            "name = \".c\"\ntargets = [\"10.0.0.3\"]",
            Some("starts or ends with '.'"),
        ),
        (
            "name = \"\"\ntargets = [\"10.0.0.3\"]",
            Some("a region name is empty"),
        ),
        ("name = \"zürich\"\ntargets = [\"10.0.0.3\"]", None),
        (
            "name = \"Europe (Ireland)\"\ntargets = [\"10.0.0.3\"]",
            None,
        ),
        (
            "name = \"eu/west\"\ntargets = [\"10.0.0.3\"]",
            Some("contains '/'"),
        ),
        (
            "name = \"eu-west \"\ntargets = [\"10.0.0.3\"]",
            Some("starts or ends with ' '"),
        ),
        (
            "targets = [\"10.0.0.3\"]",
            Some("this region has no name; add name = \"...\""),
        ),
        ("name = \"c\"", Some("region \"c\" has no targets")),
        (
            "name = \"c\"\ntargets = []",
            Some("region \"c\" has an empty targets list"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\", \"10.0.0.3\"]",
            Some("listed twice in region \"c\""),
        ),
        (
            "name = \"c\"\ntargets = [\"Host.Example.com\", \"host.example.com\"]",
            Some("listed twice"),
        ),
        (
            "name = \"c\"\ntargets = [\"bad_host\"]",
            Some("target \"bad_host\" is invalid"),
        ),
        (
            "name = \"c\"\ntargets = [5]",
            Some("each item of targets must be a string, not an integer"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nsource = \"::1\"",
            None,
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nsource = \"c.example.com\"",
            Some("source \"c.example.com\" is not an IP address"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = 90, lon = -180 }",
            None,
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = 90.5, lon = 0 }",
            Some("lat is out of range"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = 0, lon = inf }",
            Some("lon is out of range"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = nan, lon = 0 }",
            Some("lat is out of range"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = 1 }",
            Some("location needs both lat and lon"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\nlocation = { lat = 1, lon = 2, alt = 2 }",
            Some("unknown key \"alt\" in location; the keys allowed here are"),
        ),
        (
            "name = \"c\"\ntargets = [\"10.0.0.3\"]\n[region.location]\nlat = 1\nlon = 2",
            None,
        ),
        (
            "nmae = \"c\"\ntargets = [\"10.0.0.3\"]",
            Some("did you mean \"name\"?"),
        ),
    ]
    .into_iter()
    .map(|(body, want)| (region(body), want))
    .collect();
    check_table(&cases);
}

#[test]
fn fleet_rules() {
    let one = "[[region]]\nname = \"a\"\ntargets = [\"10.0.0.1\"]\n";
    let cases: Vec<(String, Option<&str>)> = vec![
        (
            String::new(),
            Some("t.toml:1:1: no regions; add at least two [[region]] tables"),
        ),
        (one.to_string(), Some("t.toml:1:1: only one region")),
        (
            format!(
                "[probe]\nkinds = [\"tcp\"]\n{one}[[region]]\nname = \"b\"\ntargets = [\"10.0.0.2:22\"]"
            ),
            Some(
                "t.toml:5:12: target \"10.0.0.1\" has no port; tcp probes need a port: write \"HOST:PORT\"",
            ),
        ),
        (
            format!(
                "[probe]\nkinds = [\"udp\"]\n{one}[[region]]\nname = \"b\"\ntargets = [\"10.0.0.2\"]"
            ),
            None,
        ),
        (
            format!("colour = 1\n{FLEET}"),
            Some("unknown key \"colour\" at the top level"),
        ),
        (
            format!("{FLEET}\n[[regions]]\nname = \"c\""),
            Some("unknown key \"regions\" at the top level; did you mean \"region\"?"),
        ),
        (
            format!("{FLEET}\n[[probe]]"),
            Some("write [probe], not [[probe]]"),
        ),
        (
            "[region]\nname = \"a\"".to_string(),
            Some("region must be a list of tables; write [[region]]"),
        ),
        (
            "region = [1]".to_string(),
            Some("each region must be a table, not an integer"),
        ),
        (
            "[[region]]\nname = \"a\"\nname = \"b\"".to_string(),
            Some("invalid TOML: \"name\" is defined twice"),
        ),
        (
            format!("{FLEET}\n[probe]\n[probe]"),
            Some("invalid TOML: \"probe\" is defined twice"),
        ),
    ];
    check_table(&cases);
}

#[test]
fn a_netns_lab_takes_every_kind_and_at_most_255_regions() {
    let netns = GEO_LAB.replace("[lab]\n", "[lab]\nmode = \"netns\"\n");
    let config = parse(
        &format!("[probe]\nkinds = [\"icmp\", \"tcp\"]\n{netns}"),
        Path::new("t.toml"),
    )
    .expect("valid");
    assert_eq!(config.probe.kinds, [ProbeKind::Icmp, ProbeKind::Tcp]);
    assert_eq!(config.lab.as_ref().map(|l| l.mode), Some(LabMode::Netns));
    // Without kinds, a lab probes udp in either mode; a lab without mode is loopback.
    let config = parse(&netns, Path::new("t.toml")).expect("valid");
    assert_eq!(config.probe.kinds, [ProbeKind::Udp]);
    let config = parse(GEO_LAB, Path::new("t.toml")).expect("valid");
    assert_eq!(config.lab.map(|l| l.mode), Some(LabMode::Loopback));
    // One /24 of 198.18.0.0/16 per region.
    let regions = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "[[region]]\nname = \"r{i}\"\nlocation = {{ lat = 0, lon = {} }}\n",
                    i as f64 / 2.0
                )
            })
            .collect::<String>()
    };
    let at_most = format!("[lab]\nmode = \"netns\"\n{}", regions(NETNS_MAX_REGIONS));
    assert!(problems(&at_most).is_empty());
    let over = format!(
        "[lab]\nmode = \"netns\"\n{}",
        regions(NETNS_MAX_REGIONS + 1)
    );
    let got = problems(&over);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("t.toml:2:8: a netns lab holds at most 255 regions")
            && got[0].contains("has 256"),
        "{got:?}"
    );
    // The loopback lab has no such limit.
    let loopback = format!("[lab]\n{}", regions(NETNS_MAX_REGIONS + 1));
    assert!(problems(&loopback).is_empty());
    // A fleet has at most MAX_REGIONS, whatever it runs on: the first one too many
    // is pointed at.
    let regions = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "[[region]]\nname = \"r{i}\"\nlocation = {{ lat = 0, lon = {} }}\n",
                    i as f64 / 10.0
                )
            })
            .collect::<String>()
    };
    let most = format!("[lab]\n{}", regions(crate::config::MAX_REGIONS));
    assert!(problems(&most).is_empty());
    let over = format!("[lab]\n{}", regions(crate::config::MAX_REGIONS + 2));
    let got = problems(&over);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("t.toml:3002:1: this is region number 1001; a fleet holds at most 1000 regions, so remove 2 of them"),
        "{got:?}"
    );
}

#[test]
fn lab_rules() {
    let lab = |extra: &str| GEO_LAB.replace("[lab]\n", &format!("[lab]\n{extra}\n"));
    let fault = |body: &str| format!("{GEO_LAB}\n[[lab.fault]]\n{body}\n");
    let cases: Vec<(String, Option<&str>)> = vec![
        (GEO_LAB.to_string(), None),
        (
            lab("jitter_ms = 0\nport = 0\nseed = 0\ninflation = 1\nbase_ms = 0"),
            None,
        ),
        (
            lab("jitter_ms = -1"),
            Some("jitter_ms is out of range; use a number from 0 to 60000"),
        ),
        (lab("port = 65536"), Some("port is out of range")),
        (
            lab("seed = -1"),
            Some("seed is out of range; use a whole number >= 0"),
        ),
        (
            lab("inflation = 0.9"),
            Some("inflation is out of range; use a number from 1 to 100"),
        ),
        (lab("base_ms = -0.1"), Some("base_ms is out of range")),
        (lab("loss = \"loss.csv\""), Some("loss needs a matrix")),
        (lab("matrx = \"rtt.csv\""), Some("did you mean \"matrix\"?")),
        (
            lab("seed = \"1\""),
            Some("seed must be an integer, not a string"),
        ),
        (format!("[probe]\nkinds = [\"udp\"]\n{GEO_LAB}"), None),
        (lab("mode = \"loopback\""), None),
        (lab("mode = \"netns\""), None),
        (
            format!(
                "[probe]\nkinds = [\"icmp\", \"udp\", \"tcp\"]\n{}",
                lab("mode = \"netns\"")
            ),
            None,
        ),
        (
            lab("mode = \"netnss\""),
            Some("unknown lab mode \"netnss\"; did you mean \"netns\"?"),
        ),
        (
            lab("mode = \"namespace\""),
            Some("unknown lab mode \"namespace\"; use \"loopback\""),
        ),
        (
            lab("mode = 1"),
            Some("mode must be a string, not an integer"),
        ),
        (
            // The mode is unusable: the kinds are not judged against it.
            format!("[probe]\nkinds = [\"tcp\"]\n{}", lab("mode = \"bogus\"")),
            Some("unknown lab mode \"bogus\""),
        ),
        (
            format!("[probe]\nkinds = [\"tcp\"]\n{}", lab("mode = \"loopback\"")),
            Some("or set mode = \"netns\" in [lab]"),
        ),
        (
            format!("[probe]\nkinds = [\"tcp\"]\n{GEO_LAB}"),
            Some("the lab emulates only udp probes"),
        ),
        (
            format!("[probe]\nkinds = [\"udp\", \"icmp\"]\n{GEO_LAB}"),
            Some("the lab emulates only udp probes"),
        ),
        (
            format!("[probe]\nkinds = [\"udp\", \"udp\"]\n{GEO_LAB}"),
            Some("probe kind \"udp\" is listed twice"),
        ),
        (
            format!("[probe]\nkinds = [\"quic\"]\n{GEO_LAB}"),
            Some("unknown probe kind \"quic\""),
        ),
        (
            GEO_LAB.replace(
                "location = { lat = 10, lon = 20 }\n",
                "targets = [\"10.0.0.1\"]\nlocation = { lat = 10, lon = 20 }\n",
            ),
            Some("targets in a lab region"),
        ),
        (
            GEO_LAB.replace(
                "location = { lat = 10, lon = 20 }\n",
                "source = \"10.0.0.1\"\nlocation = { lat = 10, lon = 20 }\n",
            ),
            Some("source in a lab region"),
        ),
        (
            GEO_LAB.replace("location = { lat = 10, lon = 20 }\n", ""),
            Some("region \"a\" has no location"),
        ),
        (
            "[lab]\n[[region]]\nname = \"a\"\nlocation = { lat = 1, lon = 1 }".to_string(),
            Some("only one region"),
        ),
        (
            "[lab]\n".to_string(),
            Some("t.toml:1:1: a lab needs regions"),
        ),
        ("[[lab]]\n".to_string(), Some("write [lab], not [[lab]]")),
        (fault("source = \"a\"\nextra_ms = 5"), None),
        (
            fault("target = \"b\"\nloss_pct = 100\nboth_directions = true"),
            None,
        ),
        (
            fault("source = \"a\"\ntarget = \"b\"\nextra_ms = 0.5\nloss_pct = 0.5"),
            None,
        ),
        (fault("source = \"a\""), Some("this fault changes nothing")),
        (
            fault("extra_ms = 5"),
            Some("a fault needs a source or a target region"),
        ),
        (
            fault("source = \"a\"\ntarget = \"a\"\nextra_ms = 5"),
            Some("a fault from \"a\" to itself"),
        ),
        (
            fault("source = \"A\"\nextra_ms = 5"),
            Some("unknown region \"A\"; did you mean \"a\"?"),
        ),
        (
            fault("target = \"zz-top\"\nextra_ms = 5"),
            Some("unknown region \"zz-top\"; use one of \"a\", \"b\""),
        ),
        (
            fault("source = \"a\"\nloss_pct = 100.5"),
            Some("loss_pct is out of range"),
        ),
        (
            fault("source = \"a\"\nextra_ms = -5"),
            Some("extra_ms is out of range"),
        ),
        (
            fault("source = \"a\"\nextra_ms = 5\nboth_directions = \"yes\""),
            Some("both_directions must be true or false"),
        ),
        (
            fault("sorce = \"a\"\nextra_ms = 5"),
            Some("did you mean \"source\"?"),
        ),
    ];
    check_table(&cases);
}

/// Writes `files` into a temporary folder and parses `text` as its `regions.toml`.
fn parse_in_dir(
    text: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, body) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, body).expect("write fixture");
    }
    let result = parse(text, &dir.path().join("regions.toml"));
    (dir, result)
}

const RTT: &str = ",a,b,c\na,,10,20\nb,11,,-\nc,21,,\n";

#[test]
fn matrix_lab_rules() {
    let regions = "[[region]]\nname = \"c\"\n[[region]]\nname = \"a\"\n";
    for (text, files, expected) in [
        ("[lab]\nmatrix = \"rtt.csv\"", vec![("rtt.csv", RTT)], None),
        // What a lab adds to a path is bounded (its reflectors once panicked on 1e23).
        (
            "[lab]\nmatrix = \"rtt.csv\"",
            vec![("rtt.csv", ",a,b,c\na,,1e23,5\nb,5,,5\nc,5,5,\n")],
            Some(
                "rtt.csv:2:4: 1e23 is out of range; write a number of milliseconds from 0 to 60000",
            ),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\njitter_ms = 1e300",
            vec![("rtt.csv", RTT)],
            Some("t:3:13: jitter_ms is out of range; use a number from 0 to 60000"),
        ),
        (
            "[lab]\nmatrix = \"m/rtt.csv\"\nloss = \"m/loss.csv\"",
            vec![
                ("m/rtt.csv", RTT),
                ("m/loss.csv", ",c,b,a\na,1,2,\nc,,3,4\nb,5,,6\n"),
            ],
            None,
        ),
        (
            &*format!("[lab]\nmatrix = \"rtt.csv\"\n{regions}"),
            vec![("rtt.csv", RTT)],
            None,
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\ninflation = 2.0",
            vec![("rtt.csv", RTT)],
            Some("t:3:1: inflation only applies to a lab without a matrix"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\nbase_ms = 2.0",
            vec![("rtt.csv", RTT)],
            Some("base_ms only applies to a lab without a matrix"),
        ),
        (
            "[lab]\nmatrix = \"nope.csv\"",
            vec![],
            Some(
                "t:2:10: cannot read nope.csv: No such file or directory (os error 2); check the path, it is relative to",
            ),
        ),
        ("[lab]\nmatrix = \"\"", vec![], Some("matrix is empty")),
        (
            "[lab]\nmatrix = \"a\\nb.csv\"",
            vec![],
            Some("matrix \"a\\nb.csv\" contains a control character"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\nloss = \"nope.csv\"",
            vec![("rtt.csv", RTT)],
            Some("t:3:8: cannot read nope.csv"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"",
            vec![("rtt.csv", ",a\na,\n")],
            Some("names 1 region"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\n[[region]]\nname = \"a\"\n[[region]]\nname = \"d\"",
            vec![("rtt.csv", RTT)],
            Some("t:6:8: region \"d\" is not in"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"",
            vec![("rtt.csv", RTT), ("loss.csv", ",a,b\na,,1\nb,1,\n")],
            Some("lacks \"c\" from"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"",
            vec![
                ("rtt.csv", RTT),
                ("loss.csv", ",a,b,c\na,,1,1\nb,1,,1\nc,1,1,101\n"),
            ],
            None,
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"",
            vec![
                ("rtt.csv", RTT),
                ("loss.csv", ",a,b,c\na,,1,1\nb,1,,1\nc,1,101,\n"),
            ],
            Some("loss.csv:4:5: 101 is out of range"),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"\n[[lab.fault]]\nsource = \"d\"\nextra_ms = 1",
            vec![("rtt.csv", RTT)],
            Some("unknown region \"d\""),
        ),
        (
            "[lab]\nmatrix = \"rtt.csv\"",
            vec![("rtt.csv", "\u{feff},a,b\r\na,,1\r\nb,2,\r\n")],
            None,
        ),
    ] {
        let (dir, result) = parse_in_dir(text, &files);
        let got: Vec<String> = match result {
            Ok(_) => Vec::new(),
            // Shorten the temporary folder's path to "t" for the comparison.
            Err(e) => e
                .to_string()
                .replace(&dir.path().join("regions.toml").display().to_string(), "t")
                .replace(&format!("{}/", dir.path().display()), "")
                .lines()
                .map(str::to_string)
                .collect(),
        };
        match expected {
            None => assert!(got.is_empty(), "{text}\nshould load, but: {got:#?}"),
            Some(want) => assert!(
                got.len() == 1 && got[0].contains(want),
                "{text}\nwanted one problem containing {want:?}, got {got:#?}"
            ),
        }
    }
}

#[test]
fn many_syntax_errors_are_capped() {
    let text = "a = \n".repeat(30);
    let got = problems(&text);
    assert_eq!(got.len(), 11, "{got:#?}");
    assert!(
        got[..10].iter().all(|m| m.contains("invalid TOML")),
        "{got:#?}"
    );
    assert!(
        got[10].contains("more TOML syntax errors after this one"),
        "{got:#?}"
    );
}

#[test]
fn an_unreadable_matrix_does_not_stop_other_checks() {
    let text = "[lab]\nmatrix = \"nope.csv\"\n[[region]]\nname = \"a\"\n[[region]]\nname = \"b\"\n\
                [[lab.fault]]\nsource = \"c\"\nextra_ms = 1\n";
    let (_dir, result) = parse_in_dir(text, &[]);
    let err = result.expect_err("broken");
    let messages: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].starts_with("cannot read nope.csv"),
        "{messages:#?}"
    );
    assert!(
        messages[1].starts_with("fault names an unknown region \"c\""),
        "{messages:#?}"
    );
}

#[test]
fn a_huge_matrix_or_configuration_is_refused_unread() {
    // Sparse: the size is claimed, not written.
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("rtt.csv");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("sparse file");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, "[lab]\nmatrix = \"rtt.csv\"\n").expect("write");
    let err = super::load::load(&config).expect_err("too large");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (2, 10), "{err}");
    assert!(
        d.message
            .starts_with("cannot read rtt.csv: it is larger than 64 MiB"),
        "{err}"
    );
    std::fs::File::create(&config)
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("sparse file");
    let err = super::load::load(&config).expect_err("too large");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
}

#[test]
fn diagnostics_are_sorted_by_file_then_position() {
    let text = "[lab]\nmatrix = \"rtt.csv\"\n\n[[lab.fault]]\nsource = \"zz\"\nextra_ms = 1\n\n[probe]\ncount = 0\n";
    let (_dir, result) = parse_in_dir(text, &[("rtt.csv", ",a,b\na,,x\nb,y,\n")]);
    let err = result.expect_err("broken");
    let places: Vec<(bool, usize, usize)> = err
        .diagnostics
        .iter()
        .map(|d| (d.file.ends_with(".csv"), d.line, d.column))
        .collect();
    assert_eq!(
        places,
        [(false, 5, 10), (false, 9, 9), (true, 2, 4), (true, 3, 3)]
    );
}

#[test]
fn good_fleet_gets_defaults() {
    let path = fixtures().join("good-fleet.toml");
    let config = load(&path).expect("good-fleet.toml loads");
    assert_eq!(config.path, path);
    assert_eq!(config.probe, ProbeSettings::default());
    assert_eq!(config.probe.kinds, [ProbeKind::Icmp]);
    assert_eq!(config.probe.count, 20);
    assert_eq!(config.probe.interval, Duration::from_millis(100));
    assert_eq!(config.probe.gap, Duration::from_millis(1));
    assert_eq!(config.probe.timeout, Duration::from_secs(1));
    assert_eq!(config.probe.payload, None);
    assert_eq!(config.lab, None);

    let names: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["us-east-1", "eu-west-1"]);
    let east = config.region("us-east-1").expect("us-east-1");
    assert_eq!(
        east.location,
        Some(Location {
            lat: 38.9,
            lon: -77.4
        })
    );
    let targets: Vec<String> = east.targets.iter().map(ToString::to_string).collect();
    assert_eq!(
        targets,
        [
            "10.0.0.1",
            "probe.use1.example.com:862",
            "[2001:db8::1]:443"
        ]
    );
    assert_eq!(east.source, Some("10.0.0.5".parse().expect("ip")));
    let west = config.region("eu-west-1").expect("eu-west-1");
    assert_eq!((west.location, west.source), (None, None));
}

#[test]
fn probe_values_are_taken() {
    let text = with_probe(
        "kinds = [\"tcp\", \"icmp\"]\ncount = 5\ninterval = \"1m 30s\"\ngap = \"0s\"\ntimeout = \"250ms\"\npayload = 0",
    );
    let config = parse(&text, Path::new("t.toml")).expect("valid");
    assert_eq!(
        config.probe,
        ProbeSettings {
            kinds: vec![ProbeKind::Tcp, ProbeKind::Icmp],
            count: 5,
            interval: Duration::from_secs(90),
            gap: Duration::ZERO,
            timeout: Duration::from_millis(250),
            payload: Some(0),
        }
    );
}

fn region_names(config: &Config) -> Vec<&str> {
    config.regions.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn matrix_only_lab_takes_the_matrix_regions_in_csv_order() {
    let config =
        load(&fixtures().join("good-lab-matrix.toml")).expect("good-lab-matrix.toml loads");
    assert_eq!(
        region_names(&config),
        ["us-west-2", "eu-central-1", "ap-south-1", "sa-east-1"]
    );
    assert!(
        config
            .regions
            .iter()
            .all(|r| r.location.is_none() && r.targets.is_empty() && r.source.is_none())
    );
    assert_eq!(config.probe.kinds, [ProbeKind::Udp]);
    let lab = config.lab.expect("a lab");
    assert_eq!((lab.jitter_ms, lab.port, lab.seed), (0.5, 8620, 7));
    let LabSource::Matrix {
        rtt_file,
        loss_file,
        rtt_ms,
        loss_pct,
    } = lab.source
    else {
        panic!("a matrix lab, got {:?}", lab.source);
    };
    assert_eq!(rtt_file, fixtures().join("lab/rtt.csv"));
    assert_eq!(loss_file, Some(fixtures().join("lab/loss.csv")));
    assert_eq!(
        rtt_ms.cells,
        vec![
            vec![None, Some(140.0), Some(220.0), Some(180.0)],
            vec![Some(141.0), None, Some(120.0), None],
            vec![Some(221.0), Some(121.0), None, Some(310.0)],
            vec![Some(181.0), None, Some(309.0), None],
        ]
    );
    assert_eq!(loss_pct.get(0, 2), Some(0.5));
    assert_eq!(loss_pct.get(3, 2), Some(2.0));
    assert_eq!(loss_pct.get(1, 3), None);
    assert_eq!(
        lab.faults,
        vec![
            LabFault {
                source: Some("ap-south-1".into()),
                target: None,
                both_directions: false,
                extra_ms: 50.0,
                loss_pct: 0.0
            },
            LabFault {
                source: Some("us-west-2".into()),
                target: Some("sa-east-1".into()),
                both_directions: true,
                extra_ms: 0.0,
                loss_pct: 10.0,
            },
        ]
    );
}

#[test]
fn lab_regions_pick_a_subset_of_a_bigger_matrix_in_config_order() {
    let config =
        load(&fixtures().join("good-lab-subset.toml")).expect("good-lab-subset.toml loads");
    assert_eq!(region_names(&config), ["ap-south-1", "us-west-2"]);
    assert_eq!(
        config.regions[0].location,
        Some(Location {
            lat: 19.1,
            lon: 72.9
        })
    );
    assert_eq!(config.probe.count, 100);
    let lab = config.lab.expect("a lab");
    assert_eq!((lab.port, lab.seed, lab.jitter_ms), (0, 1, 0.0));
    let LabSource::Matrix {
        loss_file,
        rtt_ms,
        loss_pct,
        ..
    } = lab.source
    else {
        panic!("a matrix lab, got {:?}", lab.source);
    };
    // Row ap-south-1 -> us-west-2 is 221 ms; us-west-2 -> ap-south-1 is 220 ms.
    assert_eq!(
        rtt_ms.cells,
        vec![vec![None, Some(221.0)], vec![Some(220.0), None]]
    );
    assert_eq!(loss_file, None);
    assert_eq!(
        loss_pct.cells,
        vec![vec![None, Some(0.0)], vec![Some(0.0), None]]
    );
}

#[test]
fn geo_lab_gets_defaults() {
    let config = load(&fixtures().join("good-lab-geo.toml")).expect("good-lab-geo.toml loads");
    assert_eq!(region_names(&config), ["us-east-1", "eu-west-1"]);
    assert_eq!(config.probe.kinds, [ProbeKind::Udp]);
    let lab = config.lab.expect("a lab");
    assert_eq!(
        lab.source,
        LabSource::Geo {
            inflation: 2.0,
            base_ms: 1.0
        }
    );
    assert_eq!((lab.jitter_ms, lab.port, lab.seed), (0.0, 8620, 1));

    let config = parse(GEO_LAB, Path::new("t.toml")).expect("valid");
    assert_eq!(
        config.lab.map(|l| l.source),
        Some(LabSource::Geo {
            inflation: 1.6,
            base_ms: 1.0
        })
    );
}

/// A small deterministic generator (xorshift), enough to shake the parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn no_input_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fuzz.toml");
    std::fs::write(dir.path().join("rtt.csv"), RTT).expect("write");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Mutations of every fixture, and of a lab config that names a CSV file.
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    seeds.push(
        b"[lab]\nmatrix = \"rtt.csv\"\n[[lab.fault]]\nsource = \"a\"\nextra_ms = 1\n".to_vec(),
    );
    let pieces: &[&[u8]] = &[
        b"[",
        b"]",
        b"[[",
        b"]]",
        b"{",
        b"}",
        b"=",
        b"\"",
        b"'",
        b"\n",
        b",",
        b".",
        b"#",
        b"\\",
        b"\xff",
        b"\xc3",
        b"0x",
        b"1e999",
        b"nan",
        b"-",
        b"region",
        b"lab",
        b"fault",
        b"name",
        b"99999999999999999999999",
        b"\"\"\"",
        b"\r\n",
        b"\0",
    ];
    for round in 0..1500 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 => bytes
                    .splice(at..at, pieces[rng.below(pieces.len())].iter().copied())
                    .for_each(drop),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, rng.next() as u8),
            }
        }
        std::fs::write(&path, &bytes).expect("write");
        for result in [load(&path), parse(&String::from_utf8_lossy(&bytes), &path)] {
            if let Err(e) = result {
                assert!(!e.diagnostics.is_empty());
                assert_eq!(e.to_string().lines().count(), e.diagnostics.len(), "{e}");
            }
        }
    }

    // Random bytes, deep nesting, huge values, and CSV files that are not UTF-8.
    let mut odd: Vec<Vec<u8>> = (0..200)
        .map(|_| (0..rng.below(300)).map(|_| rng.next() as u8).collect())
        .collect();
    odd.push(format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes());
    odd.push(format!("a = {}1{}", "{b=".repeat(50_000), "}".repeat(50_000)).into_bytes());
    odd.push(format!("{}b = 1", "a.".repeat(100_000)).into_bytes());
    odd.push(format!("[{}b]", "a.".repeat(100_000)).into_bytes());
    odd.push(format!("[[region]]\nname = \"{}\"", "x".repeat(1_000_000)).into_bytes());
    odd.push(b"[probe]\ncount = -99999999999999999999999999999999999999999999999\ninterval = \"18446744073709551616s\"".to_vec());
    for bytes in &odd {
        std::fs::write(&path, bytes).expect("write");
        let _ = load(&path);
    }
    std::fs::write(dir.path().join("rtt.csv"), b",a,b\na,,\xff\nb,1,\n").expect("write");
    let err = parse("[lab]\nmatrix = \"rtt.csv\"", &path).expect_err("not UTF-8");
    assert!(
        err.to_string()
            .contains("rtt.csv:2:4: the file is not UTF-8"),
        "{err}"
    );
}

#[test]
fn diff_and_schedule_rules() {
    let cases: Vec<(String, Option<&str>)> = [
        ("[diff]\np50_pct = 15\nloss_pp = 1", None),
        ("[diff]\nalpha = 0.05", None),
        ("[diff]\nalpha = 0", Some("alpha is out of range")),
        ("[diff]\np95_ms = -1", Some("p95_ms is out of range")),
        ("[diff]\np50 = 3", Some("unknown key \"p50\" in [diff]")),
        (
            "[schedule]\nevery = \"5m\"\njitter = \"10s\"\nkeep = 100\nkeep_for = \"7d\"",
            None,
        ),
        ("[schedule]\ncron = \"*/5 * * * *\"", None),
        (
            "[schedule]\nevery = \"5m\"\ncron = \"*/5 * * * *\"",
            Some("has both every and cron"),
        ),
        ("[schedule]\nkeep = 3", Some("needs every = \"5m\" or cron")),
        (
            "[schedule]\ncron = \"every five minutes\"",
            Some("is not a cron expression"),
        ),
        (
            "[schedule]\nevery = \"500ms\"",
            Some("every must be whole seconds, at least 1s (got 500ms)"),
        ),
        (
            "[schedule]\nevery = \"1500ms\"",
            Some("every must be whole seconds, at least 1s (got 1s 500ms): a sweep's run is named by the second it starts"),
        ),
        ("[schedule]\nevery = \"0s\"", Some("every must be above 0")),
        ("[schedule]\nevery = \"90s\"", None),
        ("[diff]\nalpha = 0.7", Some("t.toml:2:9: alpha is out of range; use a number above 0 and below 0.5, like 0.01")),
        (
            "[thresholds]\nshift_window = 48\nshift_min_runs = 20\nshift_margin_pct = 5\nshift_margin_ms = 0.5\nshift_deviations = 4",
            None,
        ),
        ("[thresholds]\nshift_window = 1", Some("shift_window is out of range; use a whole number from 2 to 1000")),
        ("[thresholds]\nshift_deviations = 0", Some("shift_deviations is out of range; use a number above 0")),
        ("[thresholds]\nshift_margin_pct = -1", Some("shift_margin_pct is out of range; use a number >= 0")),
        (
            "[thresholds]\nshift_window = 8",
            Some("t.toml:2:16: shift_window (8) is below shift_min_runs (12, the default); make shift_window at least shift_min_runs"),
        ),
        (
            "[thresholds]\nshift_min_runs = 30",
            Some("t.toml:2:18: shift_min_runs (30) is above shift_window (24, the default); make shift_min_runs at most shift_window"),
        ),
        (
            "[schedule]\nevery = \"1m\"\njitter = \"2m\"",
            Some("jitter must be shorter than the period"),
        ),
        (
            "[schedule]\nevery = \"1m\"\nkeep = 0",
            Some("keep is out of range"),
        ),
        ("[schedule]\nevery = 300", Some("durations are strings")),
    ]
    .into_iter()
    .map(|(t, e)| (format!("{t}\n{FLEET}"), e))
    .collect();
    check_table(&cases);
}

#[test]
fn diff_and_schedule_values_are_taken() {
    let text = format!(
        "[diff]\np50_pct = 15\nalpha = 0.05\n\n[schedule]\nevery = \"5m\"\njitter = \"10s\"\nkeep = 12\n{FLEET}"
    );
    let c = parse(&text, Path::new("regions.toml")).expect("valid");
    assert_eq!(
        (c.diff.p50_pct, c.diff.alpha, c.diff.p95_ms),
        (15.0, 0.05, 5.0)
    );
    let s = c.schedule.expect("schedule");
    assert_eq!(s.every, Some(Duration::from_secs(300)));
    assert_eq!(
        (s.jitter, s.keep, s.cron),
        (Duration::from_secs(10), Some(12), None)
    );
    let c = parse(FLEET, Path::new("regions.toml")).expect("valid");
    assert_eq!(c.diff, DiffThresholds::default());
    assert_eq!(c.schedule, None);
}
