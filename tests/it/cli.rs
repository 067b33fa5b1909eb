//! The command line's contract: exit codes, located errors, help text.

use crate::harness::{Dir, repo};

#[test]
fn the_repository_config_is_valid() {
    let dir = Dir::new();
    let config = repo().join("regions.toml");
    let out = dir.latmap(&["check", "--config", config.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains("10 regions, 90 paths per kind, kinds: udp"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("3 faults"), "{}", out.stdout);
}

#[test]
fn a_broken_config_gets_every_problem_located_and_exit_2() {
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        "[probe]\ncuont = 5\ntimeout = 3\n\n[[region]]\nname = \"a\"\ntargets = [\"10.0.0.1\"]\n\n[[region]]\nname = \"a\"\ntargets = [\"not a host\"]\n",
    );
    for cmd in [&["check"][..], &["sweep"], &["probe", "--region", "a"]] {
        let out = dir.latmap(cmd);
        assert_eq!(out.status, Some(2), "{cmd:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{cmd:?} printed {}", out.stdout);
        insta::assert_snapshot!("broken-config-stderr", out.stderr);
    }
}

#[test]
fn a_missing_config_names_the_file_and_exit_2() {
    let dir = Dir::new();
    let out = dir.latmap(&["check", "--config", "nowhere.toml"]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("nowhere.toml"), "{}", out.stderr);
}

#[test]
fn aggregate_refuses_foreign_and_broken_files() {
    let dir = Dir::new();
    dir.write("run.json", "{\"schema\": \"latmap.run/9\", \"paths\": []}");
    dir.write("junk.json", "{ not json");
    let out = dir.latmap(&["aggregate", "run.json"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains(
            "run.json is a run (schema \"latmap.run/9\"), not a region report; pass a region report here"
        ),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&["aggregate", "junk.json"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("junk.json is not valid JSON"),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&["aggregate", "absent.json"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("cannot read absent.json"),
        "{}",
        out.stderr
    );
    // Nothing was written on failure.
    assert!(
        !dir.join("run.json.tmp").exists() && std::fs::read_dir(dir.path()).unwrap().count() == 2
    );
}

#[test]
fn sweep_without_a_local_region_says_what_to_do() {
    let dir = Dir::new();
    dir.write(
        "regions.toml",
        "[[region]]\nname = \"a\"\ntargets = [\"192.0.2.1\"]\nsource = \"192.0.2.10\"\n\n[[region]]\nname = \"b\"\ntargets = [\"192.0.2.2\"]\n",
    );
    let out = dir.latmap(&["sweep"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("no region can probe from this machine"),
        "{}",
        out.stderr
    );
    // Asked for explicitly, the region's prober fails to bind before sending anything.
    let out = dir.latmap(&["sweep", "--region", "a"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr
            .contains("region a: cannot bind icmp socket to 192.0.2.10:0")
            && out.stderr.contains("an address of this host"),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&["probe", "--region", "nowhere"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("no region \"nowhere\""),
        "{}",
        out.stderr
    );
}

#[test]
fn help_explains_the_commands() {
    let dir = Dir::new();
    let out = dir.latmap(&["--help"]);
    out.assert_ok();
    insta::assert_snapshot!("help", out.stdout);
    for cmd in [
        "check",
        "probe",
        "aggregate",
        "sweep",
        "report",
        "reflect",
        "ping",
        "agent",
        "serve",
        "lab",
    ] {
        let out = dir.latmap(&[cmd, "--help"]);
        out.assert_ok();
        insta::assert_snapshot!(format!("help-{cmd}"), out.stdout);
    }
}

#[test]
fn an_agent_without_a_schedule_says_where_to_give_one() {
    let dir = Dir::new();
    dir.write("rtt.csv", ",a,b\na,,5\nb,5,\n");
    dir.write("regions.toml", "[lab]\nmatrix = \"rtt.csv\"\nport = 0\n");
    dir.write("token", "s3cret-token-of-some-length\n");
    let args = [
        "agent",
        "--region",
        "a",
        "--aggregator",
        "http://127.0.0.1:9",
        "--token-file",
        "token",
    ];
    let out = dir.latmap(&args);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("needs a schedule") && out.stderr.contains("[schedule]"),
        "{}",
        out.stderr
    );
}
