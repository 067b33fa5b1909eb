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

/// Whether `tool` runs here (`tool --version`).
fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completions_are_generated_for_every_subcommand_and_parse() {
    let dir = Dir::new();
    let subcommands = [
        "check",
        "probe",
        "aggregate",
        "sweep",
        "diff",
        "render",
        "report",
        "agent",
        "serve",
        "reflect",
        "ping",
        "lab",
        "completions",
        "man",
    ];
    let bash = dir.latmap(&["completions", "bash"]);
    bash.assert_ok();
    for sub in subcommands {
        assert!(bash.stdout.contains(sub), "bash completion lacks {sub}");
    }
    // Flags of a subcommand are completed too.
    assert!(bash.stdout.contains("--keep-for"), "{}", bash.stdout);
    let script = dir.write("latmap.bash", &bash.stdout);
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n refused the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourced in a shell, it registers the completion function.
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p latmap", script.display()))
        .output()
        .expect("bash runs");
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("latmap"),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    for (shell, checker) in [("zsh", "zsh"), ("fish", "fish")] {
        let out = dir.latmap(&["completions", shell]);
        out.assert_ok();
        assert!(out.stdout.contains("sweep"), "{shell}: {}", out.stdout);
        if have(checker) {
            let script = dir.write(&format!("latmap.{shell}"), &out.stdout);
            let check = std::process::Command::new(checker)
                .arg("-n")
                .arg(&script)
                .output()
                .expect("shell runs");
            assert!(check.status.success(), "{shell} -n refused the script");
        } else {
            eprintln!("{shell} is not installed: its script is not parsed, only generated");
        }
    }
    let out = dir.latmap(&["completions", "tcsh"]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("possible values"), "{}", out.stderr);
}

#[test]
fn man_pages_render_with_their_sections() {
    let dir = Dir::new();
    let page = dir.latmap(&["man"]);
    page.assert_ok();
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
    ] {
        assert!(
            page.stdout.contains(section),
            "no {section}: {}",
            page.stdout
        );
    }
    let out = dir.latmap(&["man", "--dir", "man"]);
    out.assert_ok();
    for name in [
        "latmap.1",
        "latmap-sweep.1",
        "latmap-lab-up.1",
        "latmap-completions.1",
    ] {
        assert!(dir.join("man").join(name).is_file(), "{name} missing");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("man/latmap.1")).unwrap(),
        page.stdout,
        "the printed page and the written one are the same"
    );
    if !have("man") {
        eprintln!("man is not installed (Debian package man-db): the pages are not rendered");
        return;
    }
    let sweep = dir.join("man/latmap-sweep.1");
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(&sweep)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C")
        .output()
        .expect("man runs");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("latmap-sweep"), "{text}");
    assert!(
        text.contains("SYNOPSIS") && text.contains("--keep-for"),
        "{text}"
    );
    // No roff warnings (an unescaped line starting with '.' or a bad request).
    assert!(
        !String::from_utf8_lossy(&rendered.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
}
