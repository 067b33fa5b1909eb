//! One settings layer, through the built binary: what `latmap check` accepts every
//! command accepts, what it refuses every command refuses in the same words (a flag's
//! error names the flag, a file's error names FILE:LINE:COL), and region names that
//! `check` accepts travel from agent to aggregator to a run.

use std::time::Duration;

use crate::harness::Dir;
use crate::heatmap::small_run;
use crate::remote::{BEARER, JSON, pending, post, push_body, report, runs, serve};
use crate::service::{Proc, free_port, until};

/// Two regions; `a` probes from this machine.
const FLEET: &str = "[[region]]\nname = \"a\"\ntargets = [\"127.0.0.1\"]\nsource = \"127.0.0.1\"\n[[region]]\nname = \"b\"\ntargets = [\"127.0.0.2\"]\n";

const AGENT: [&str; 7] = [
    "agent",
    "--region",
    "a",
    "--aggregator",
    "http://127.0.0.1:9",
    "--token-file",
    "token",
];

fn token(dir: &Dir) {
    dir.write("token", "0123456789abcdef-test-token\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
}

/// The one line of `stderr` that holds `needle`.
fn line_with<'a>(stderr: &'a str, needle: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{stderr}"))
}

#[test]
fn a_sub_second_schedule_is_refused_by_every_command_alike() {
    let dir = Dir::new();
    token(&dir);
    dir.write(
        "regions.toml",
        &format!("{FLEET}\n[schedule]\nevery = \"1500ms\"\n"),
    );
    let want = "regions.toml:10:9: every must be whole seconds, at least 1s (got 1s 500ms): \
                a sweep's run is named by the second it starts; write it like \"30s\" or \"5m\"";
    let check = dir.latmap(&["check"]);
    assert_eq!(check.status, Some(2), "{}", check.stderr);
    assert_eq!(line_with(&check.stderr, "every must"), want);
    for args in [&["sweep", "--schedule"][..], &AGENT] {
        let out = dir.latmap(args);
        assert_eq!(out.status, Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(line_with(&out.stderr, "every must"), want, "{args:?}");
    }
    // The same rule for the flag, which the error names.
    dir.write("regions.toml", FLEET);
    dir.latmap(&["check"]).assert_ok();
    let want = "latmap: --every must be whole seconds, at least 1s (got 1s 500ms): \
                a sweep's run is named by the second it starts; write it like \"30s\" or \"5m\"";
    let agent: Vec<&str> = AGENT.iter().copied().chain(["--every", "1500ms"]).collect();
    for args in [&["sweep", "--every", "1500ms"][..], &agent] {
        let out = dir.latmap(args);
        assert_eq!(out.status, Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(line_with(&out.stderr, "--every"), want, "{args:?}");
    }
    // The environment variable stands for the flag, and is held to the same rule.
    let env = [("LATMAP_EVERY", std::ffi::OsStr::new("1500ms"))];
    let out = crate::harness::latmap_env(dir.path(), &env, &AGENT);
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    assert_eq!(line_with(&out.stderr, "--every"), want);
    // And what check accepts, the agent takes: it starts sweeping (and is stopped).
    dir.write(
        "regions.toml",
        &format!("{FLEET}\n[schedule]\nevery = \"90s\"\n"),
    );
    dir.latmap(&["check"]).assert_ok();
    let mut agent = Proc::start(dir.path(), "agent.log", &AGENT);
    until(Duration::from_secs(30), "the agent starts", || {
        agent.log().contains("sweeping every 1m 30s").then_some(())
    });
    // Stopped at once (the first epoch is up to 90 s away); its exit status depends on
    // whether its signal handler was installed yet, so only its end is awaited.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait(Duration::from_secs(30));
    assert!(!agent.log().contains("whole seconds"), "{}", agent.log());
}

#[test]
fn alpha_is_one_rule_for_the_file_and_the_flag() {
    let dir = Dir::new();
    dir.write(
        "run.json",
        &serde_json::to_string_pretty(&small_run(1.0)).expect("JSON"),
    );
    // The file: refused by check and by diff, in the same words at the same place.
    dir.write("regions.toml", &format!("{FLEET}\n[diff]\nalpha = 0.7\n"));
    let want =
        "regions.toml:10:9: alpha is out of range; use a number above 0 and below 0.5, like 0.01";
    let check = dir.latmap(&["check"]);
    assert_eq!(check.status, Some(2), "{}", check.stderr);
    assert_eq!(line_with(&check.stderr, "alpha"), want);
    let diff = dir.latmap(&["diff", "run.json", "run.json"]);
    assert_eq!(diff.status, Some(2), "{}", diff.stderr);
    assert_eq!(line_with(&diff.stderr, "alpha"), want);
    // The flag: the same range, named by the flag.
    dir.write("regions.toml", FLEET);
    for bad in ["0.7", "0.5", "0"] {
        let out = dir.latmap(&["diff", "run.json", "run.json", "--alpha", bad]);
        assert_eq!(out.status, Some(2), "{bad}: {}", out.stderr);
        assert_eq!(
            line_with(&out.stderr, "alpha"),
            "latmap: --alpha is out of range; use a number above 0 and below 0.5, like 0.01"
        );
    }
    // What check accepts, diff takes, from the file and from the flag.
    dir.write("regions.toml", &format!("{FLEET}\n[diff]\nalpha = 0.05\n"));
    dir.latmap(&["check"]).assert_ok();
    dir.latmap(&["diff", "run.json", "run.json"]).assert_ok();
    dir.latmap(&["diff", "run.json", "run.json", "--alpha", "0.2"])
        .assert_ok();
}

#[test]
fn readable_region_names_go_from_check_through_agents_to_a_run() {
    let dir = Dir::new();
    let (ie, us) = ("Europe (Ireland)", "US East");
    dir.write("rtt.csv", &format!(",{ie},{us}\n{ie},,20\n{us},20,\n"));
    dir.write(
        "lab.toml",
        "[probe]\ncount = 5\ninterval = \"10ms\"\ntimeout = \"500ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\n",
    );
    token(&dir);
    dir.latmap(&["--config", "lab.toml", "check"]).assert_ok();
    let (_server, addr) = serve(
        &dir,
        free_port(),
        &["--config", "lab.toml", "--deadline", "60s"],
    );
    let url = format!("http://{addr}");
    let mut agents: Vec<Proc> = [ie, us]
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let spool = format!("spool/{i}");
            Proc::start(
                dir.path(),
                &format!("agent-{i}.log"),
                &[
                    "--config",
                    "lab.toml",
                    "agent",
                    "--region",
                    region,
                    "--aggregator",
                    &url,
                    "--token-file",
                    "token",
                    "--every",
                    "2s",
                    "--sweeps",
                    "1",
                    "--spool",
                    &spool,
                    "--retry-max",
                    "2s",
                ],
            )
        })
        .collect();
    for a in &mut agents {
        let status = a.wait(Duration::from_secs(90));
        assert!(status.success(), "agent failed:\n{}", a.log());
        assert!(!a.log().contains("rejected"), "{}", a.log());
    }
    let all = until(Duration::from_secs(30), "a complete run", || {
        let r = runs(addr);
        r.iter().any(|r| r["complete"] == true).then_some(r)
    });
    assert_eq!(all[0]["reported"], serde_json::json!([ie, us]), "{all:?}");
    let id = all[0]["id"].as_str().expect("id");
    let run = crate::service::get(addr, &format!("/v1/runs/{id}")).json();
    assert_eq!(run["paths"].as_array().map(Vec::len), Some(2), "{run}");
    // Nothing waits in the spools, nothing was parked as rejected.
    for i in 0..2 {
        let spool = dir.join(&format!("spool/{i}"));
        assert_eq!(pending(&spool), 0, "spool {i}");
        assert_eq!(pending(&spool.join("rejected")), 0, "spool {i}: rejected");
    }
    // A name the rule refuses: check and the server refuse it with the same words.
    dir.write(
        "bad.toml",
        "[[region]]\nname = \"a/b\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"c\"\ntargets = [\"127.0.0.2\"]\n",
    );
    let check = dir.latmap(&["--config", "bad.toml", "check"]);
    assert_eq!(check.status, Some(2), "{}", check.stderr);
    let rule = latmap::config::RegionName::new("a/b").unwrap_err();
    assert_eq!(
        line_with(&check.stderr, "region name"),
        format!("bad.toml:2:8: {rule}")
    );
    let (_open, addr) = serve(&dir, free_port(), &[]);
    let epoch = {
        let now = chrono::Utc::now().timestamp();
        chrono::DateTime::<chrono::Utc>::from_timestamp(now - now % 60, 0)
            .expect("time")
            .to_rfc3339()
    };
    let a = post(
        addr,
        &[("Authorization", BEARER), JSON],
        &push_body(&epoch, report("a/b", &["a/b", "c"], 3)),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let e = a.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(e.contains(&rule), "{e}");
}
