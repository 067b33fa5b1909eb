//! History: a lab swept on a schedule keeps each path's record beside its runs, `shift`
//! judges each run against it, and `latmap history` draws and exports it; the same from
//! `latmap serve`'s store, its API and its web pages.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::harness::{Dir, read_json, timing_lock};
use crate::heatmap::rasterise;

/// A three-region lab in which a → b takes `ab_ms` (b → a 100 ms, no shorter way
/// round through c), short sweeps.
fn lab(dir: &Dir, name: &str, ab_ms: u32) {
    dir.write(
        &format!("{name}.csv"),
        &format!(",a,b,c\na,,{ab_ms},90\nb,100,,90\nc,90,90,\n"),
    );
    dir.write(
        &format!("{name}.toml"),
        &format!(
            "[probe]\ncount = 20\ninterval = \"10ms\"\ntimeout = \"600ms\"\n\n[lab]\nmatrix = \"{name}.csv\"\nport = 0\n"
        ),
    );
}

/// The runs of the series in `out`, oldest first, as JSON.
fn runs(out: &Path) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .expect("series folder")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let run = read_json(&out.join(&n).join("run.json"));
            (n, run)
        })
        .collect()
}

/// The `shift` findings of a run, as "severity source → target".
fn shifts(run: &Value) -> Vec<String> {
    run["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["detector"] == "shift")
        .map(|a| {
            format!(
                "{} {} → {}",
                a["severity"].as_str().unwrap_or(""),
                a["subject"]["source"].as_str().unwrap_or(""),
                a["subject"]["target"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Pixels of exactly this colour.
fn count_colour(p: &resvg::tiny_skia::Pixmap, rgb: (u8, u8, u8)) -> usize {
    p.pixels()
        .iter()
        .filter(|c| (c.red(), c.green(), c.blue()) == rgb && c.alpha() == 255)
        .count()
}

#[test]
fn a_scheduled_series_flags_a_step_within_two_runs_and_no_quiet_run() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir, "quiet", 100);
    lab(&dir, "step", 113);
    // 14 quiet runs: the last two are judged (12 earlier runs are needed) and quiet.
    dir.latmap(&[
        "--config",
        "quiet.toml",
        "sweep",
        "--every",
        "1s",
        "--sweeps",
        "14",
        "--out",
        "runs",
    ])
    .assert_ok();
    // The route of a → b changes: 113 ms, which no fixed threshold flags.
    dir.latmap(&[
        "--config",
        "step.toml",
        "sweep",
        "--every",
        "1s",
        "--sweeps",
        "2",
        "--out",
        "runs",
    ])
    .assert_ok();
    let all = runs(&dir.join("runs"));
    assert_eq!(
        all.len(),
        16,
        "{:?}",
        all.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    // A run whose prober fell behind its schedule (a machine this busy) is not judged
    // (its `prober` finding says so): `shift` must then stay silent on it, and the run
    // after it has no flagged run before it.
    let discounted = |run: &Value| {
        let p = crate::harness::path(run, "a", "b");
        let (lagged, sent) = (
            p["lagged"].as_u64().unwrap_or(0),
            p["sent"].as_u64().unwrap(),
        );
        lagged > 0 && lagged * 10 >= sent
    };
    let findings = |k: usize| {
        let r = &all[k].1;
        format!(
            "{}: a → b {}; findings {}",
            all[k].0,
            crate::harness::path(r, "a", "b"),
            r["anomalies"]
        )
    };
    for (name, run) in &all[..14] {
        assert_eq!(shifts(run), Vec::<String>::new(), "quiet run {name}");
    }
    let mut judged = 0;
    for k in 14..16 {
        let want: Vec<&str> = if discounted(&all[k].1) {
            vec![]
        } else if k > 14 && !shifts(&all[k - 1].1).is_empty() {
            vec!["critical a → b"]
        } else {
            vec!["warning a → b"]
        };
        judged += usize::from(!want.is_empty());
        assert_eq!(
            shifts(&all[k].1),
            want,
            "run {k} of the series: {}",
            findings(k)
        );
        // No other detector saw the step.
        let others: Vec<&Value> = all[k].1["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["detector"] != "shift" && a["detector"] != "prober")
            .collect();
        assert!(others.is_empty(), "{others:?}");
    }
    assert!(
        judged > 0,
        "every run of the step was discounted: {}",
        findings(15)
    );

    // The series of the path: one point per run, in order, with the run's findings.
    let json = dir.latmap(&["history", "runs", "--path", "a:b", "--format", "json"]);
    json.assert_ok();
    let doc: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(doc["schema"], "latmap.history/1");
    let points = doc["paths"][0]["points"].as_array().expect("points");
    assert_eq!(points.len(), 16);
    for (p, (name, run)) in points.iter().zip(&all) {
        let path = crate::harness::path(run, "a", "b");
        assert_eq!(p["run"], run["id"], "{name}");
        assert_eq!(p["rtt_us"]["p50"], path["rtt_us"]["p50"], "{name}");
        assert_eq!(p["rtt_us"]["p95"], path["rtt_us"]["p95"], "{name}");
        assert_eq!(p["received"], path["received"], "{name}");
    }
    // Each point carries its run's findings on the path.
    let severity_of_shift = |p: &Value| {
        p["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["detector"] == "shift")
            .map(|f| f["severity"].as_str().unwrap().to_string())
    };
    for (k, (name, run)) in all.iter().enumerate() {
        let want = shifts(run)
            .first()
            .map(|s| s.split(' ').next().unwrap().to_string());
        assert_eq!(severity_of_shift(&points[k]), want, "{name}");
    }
    let p50 = |i: usize| points[i]["rtt_us"]["p50"].as_f64().unwrap() / 1000.0;
    assert!((p50(0) - 100.0).abs() < 1.0 && (p50(15) - 113.0).abs() < 1.0);

    // CSV: a header and one row per run.
    let csv = dir.latmap(&["history", "runs", "--path", "a:b", "--out", "ab.csv"]);
    csv.assert_ok();
    let text = std::fs::read_to_string(dir.join("ab.csv")).expect("csv");
    assert_eq!(text.lines().count(), 17);
    let flagged = text.lines().filter(|l| l.contains("shift:")).count();
    assert_eq!(flagged, judged, "{text}");

    // The chart: drawn, the same bytes twice, and an independent renderer sees its
    // median in the no-loss colour and the step's finding markers.
    dir.latmap(&["history", "runs", "--path", "a:b", "--out", "ab.svg"])
        .assert_ok();
    dir.latmap(&["history", "runs", "--path", "a:b", "--out", "ab2.svg"])
        .assert_ok();
    let svg = std::fs::read_to_string(dir.join("ab.svg")).expect("svg");
    assert_eq!(svg, std::fs::read_to_string(dir.join("ab2.svg")).unwrap());
    let px = rasterise(&svg);
    assert!(
        count_colour(&px, (0x26, 0xff, 0x00)) > 100,
        "the median line, no loss"
    );
    // The step's markers: red for a critical finding, orange for a warning.
    let marker = if all
        .iter()
        .any(|(_, r)| shifts(r).iter().any(|s| s.starts_with("critical")))
    {
        (0xff, 0x00, 0x00)
    } else {
        (0xff, 0x8c, 0x00)
    };
    assert!(
        count_colour(&px, marker) > 10,
        "the finding marker {marker:?}"
    );

    // Small multiples of a region's paths: four from and to a.
    dir.latmap(&[
        "history", "runs", "--region", "a", "--format", "json", "--out", "a.json",
    ])
    .assert_ok();
    let doc = read_json(&dir.join("a.json"));
    let mut paths: Vec<String> = doc["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}→{}",
                p["source"].as_str().unwrap(),
                p["target"].as_str().unwrap()
            )
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["a→b", "a→c", "b→a", "c→a"]);
    dir.latmap(&["history", "runs", "--region", "a", "--out", "a.svg"])
        .assert_ok();
    rasterise(&std::fs::read_to_string(dir.join("a.svg")).unwrap());

    // The history is derived: deleted, it is rebuilt from the runs, the same.
    std::fs::remove_file(dir.join("runs/history.redb")).expect("remove the history");
    let again = dir.latmap(&["history", "runs", "--path", "a:b", "--format", "json"]);
    again.assert_ok();
    assert_eq!(again.stdout, json.stdout);
    assert!(
        again.stderr.contains("recorded 16 run(s)"),
        "{}",
        again.stderr
    );
    // The same path by its two regions (the way for names holding ':'); a --path
    // with two ':' is ambiguous and says what to give instead.
    let apart = dir.latmap(&[
        "history", "runs", "--source", "a", "--target", "b", "--format", "json",
    ]);
    apart.assert_ok();
    assert_eq!(apart.stdout, json.stdout);
    let two = dir.latmap(&["history", "runs", "--path", "a:b:c", "--format", "json"]);
    assert_eq!(two.status, Some(2), "{}", two.stderr);
    assert!(
        two.stderr.contains("--source \"a\" --target \"b:c\""),
        "{}",
        two.stderr
    );
}

#[test]
fn history_follows_retention_and_a_kill_and_says_what_is_wrong() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(&dir, "quiet", 100);
    let sweep = |n: &str, extra: &[&str]| {
        let mut args = vec![
            "--config",
            "quiet.toml",
            "sweep",
            "--every",
            "1s",
            "--sweeps",
            n,
            "--out",
            "runs",
        ];
        args.extend_from_slice(extra);
        dir.latmap(&args).assert_ok();
    };
    sweep("4", &[]);
    // Retention removes runs; the history forgets them.
    sweep("1", &["--keep", "3"]);
    let points = |dir: &Dir| -> Vec<String> {
        let out = dir.latmap(&["history", "runs", "--path", "b:c", "--format", "json"]);
        out.assert_ok();
        let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
        doc["paths"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["run"].as_str().unwrap().to_string())
            .collect()
    };
    let ids: Vec<String> = runs(&dir.join("runs"))
        .iter()
        .map(|(_, r)| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(points(&dir), ids);

    // A sweep killed with SIGKILL, at some point of its work: the history still holds
    // exactly the runs on disk afterwards.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_latmap"))
        .current_dir(dir.path())
        .args([
            "--config",
            "quiet.toml",
            "sweep",
            "--every",
            "1s",
            "--out",
            "runs",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a sweep");
    std::thread::sleep(std::time::Duration::from_millis(3700));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let ids: Vec<String> = runs(&dir.join("runs"))
        .iter()
        .map(|(_, r)| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 4, "{ids:?}");
    assert_eq!(points(&dir), ids);

    // Mistakes get a sentence that says what to do.
    let bad = dir.latmap(&["history", "runs", "--path", "a-b"]);
    assert_eq!(bad.status, Some(2));
    assert!(bad.stderr.contains("SOURCE:TARGET"), "{}", bad.stderr);
    let bad = dir.latmap(&["history", "runs", "--path", "a:x"]);
    assert_eq!(bad.status, Some(2));
    assert!(
        bad.stderr.contains("no history of the path a → x") && bad.stderr.contains("a, b, c"),
        "{}",
        bad.stderr
    );
    let bad = dir.latmap(&["history", "runs", "--path", "a:b", "--kind", "icmp"]);
    assert!(
        bad.stderr.contains("measured with udp, not icmp"),
        "{}",
        bad.stderr
    );
    let bad = dir.latmap(&["history", "nowhere", "--path", "a:b"]);
    assert!(
        bad.stderr.contains("not a folder of runs"),
        "{}",
        bad.stderr
    );
    let bad = dir.latmap(&["history", "runs"]);
    assert_eq!(bad.status, Some(2));
    assert!(bad.stderr.contains("--path"), "{}", bad.stderr);
    let bad = dir.latmap(&["history", "runs", "--path", "a:b", "--since", "soon"]);
    assert!(bad.stderr.contains("7d"), "{}", bad.stderr);
    // --since: nothing that old is left out; a time after every run leaves no point.
    let out = dir.latmap(&[
        "history", "runs", "--path", "a:b", "--since", "1h", "-f", "csv",
    ]);
    assert_eq!(out.stdout.lines().count(), ids.len() + 1);
    let out = dir.latmap(&[
        "history",
        "runs",
        "--path",
        "a:b",
        "--since",
        "2999-01-01T00:00:00Z",
        "-f",
        "csv",
    ]);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
}

/// Agents a, b and c sweep `sweeps` times into the server at `addr`, started together just
/// after an epoch boundary so that they share their epochs (each sweeps the 2 s epochs
/// after its start); returns when all have exited, every report delivered.
fn three_agents_sweep(dir: &Dir, addr: std::net::SocketAddr, sweeps: &str) {
    crate::service::sleep_past_an_epoch(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_millis(100),
    );
    let mut agents: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|r| crate::remote::agent(dir, r, addr, sweeps))
        .collect();
    for a in &mut agents {
        assert!(
            a.wait(std::time::Duration::from_secs(180)).success(),
            "{}",
            a.log()
        );
    }
}

/// Three agents push to a server; its history, API and web pages show the runs.
#[test]
fn serve_keeps_the_history_and_its_pages_link_the_heatmap_to_the_paths() {
    use crate::remote::{TOKEN, complete, serve};
    use crate::service::{get, http};
    let _t = timing_lock();
    let dir = Dir::new();
    crate::remote::lab(&dir);
    let (mut server, addr) = serve(&dir, 0, &["--deadline", "60s", "--auth-reads"]);
    three_agents_sweep(&dir, addr, "3");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let get_auth = |path: &str| http(addr, "GET", path, &auth, None).expect("GET");
    crate::service::until(
        std::time::Duration::from_secs(60),
        "three complete runs",
        || {
            let a = get_auth("/v1/runs");
            let runs: Vec<Value> = serde_json::from_str(&a.body).ok()?;
            (complete(&runs) == 3).then_some(())
        },
    );

    // Reads need the token: a browser is asked for it (Basic), /healthz stays open.
    let open = get(addr, "/");
    assert_eq!(open.status, 401, "{}", open.body);
    assert!(
        open.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    assert_eq!(get(addr, "/v1/history?source=a&target=b").status, 401);
    assert_eq!(get(addr, "/healthz").status, 200);
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("me:{TOKEN}"))
    );
    let page = http(addr, "GET", "/", &[("Authorization", basic.as_str())], None).expect("GET /");
    assert_eq!(page.status, 200);
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("me:not-the-token-at-all")
    );
    assert_eq!(
        http(addr, "GET", "/", &[("Authorization", wrong.as_str())], None)
            .unwrap()
            .status,
        401
    );

    // The API: one point per run, the same as the runs.
    let h = get_auth("/v1/history?source=a&target=b&kind=udp");
    assert_eq!(h.status, 200, "{}", h.body);
    let doc = h.json();
    let points = doc["paths"][0]["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    let ids: BTreeMap<String, ()> = points
        .iter()
        .map(|p| (p["run"].as_str().unwrap().to_string(), ()))
        .collect();
    for id in ids.keys() {
        let run = get_auth(&format!("/v1/runs/{id}")).json();
        let path = crate::harness::path(&run, "a", "b");
        let p = points.iter().find(|p| p["run"] == id.as_str()).unwrap();
        assert_eq!(p["rtt_us"]["p50"], path["rtt_us"]["p50"]);
    }
    assert_eq!(get_auth("/v1/history?source=a&target=x").status, 404);
    assert_eq!(get_auth("/v1/history?source=a").status, 400);
    assert_eq!(get_auth("/v1/history?region=a&kind=smoke").status, 400);

    // The pages: the heatmap's cells link to the paths' pages, which draw their chart.
    let index = page.body;
    assert!(
        index.contains("id=\"heatmap\"") && index.contains("<svg"),
        "{index}"
    );
    assert!(index.contains("href=\"/paths/a/b?kind=udp\""), "{index}");
    assert!(
        index.contains("id=\"reported\">Reported (3): a, b, c"),
        "{index}"
    );
    let path = get_auth("/paths/a/b?kind=udp");
    assert_eq!(path.status, 200);
    assert!(
        path.body.contains("class=\"smoke\"") && path.body.contains("3 runs"),
        "{}",
        path.body
    );
    assert_eq!(get_auth("/paths/a/x").status, 404);
    let runs_page = get_auth("/runs");
    assert_eq!(
        runs_page.body.matches("<a href=\"/runs/").count(),
        3,
        "{}",
        runs_page.body
    );

    // `latmap history URL` reads the server's history.
    let out = crate::harness::latmap_env(
        dir.path(),
        &[("LATMAP_TOKEN_FILE", std::ffi::OsStr::new("token"))],
        &[
            "history",
            &format!("http://{addr}"),
            "--path",
            "a:b",
            "-f",
            "json",
        ],
    );
    out.assert_ok();
    let back: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(back["paths"][0]["points"], doc["paths"][0]["points"]);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait(std::time::Duration::from_secs(30)).success());
}

/// A headless Chromium, if one can be had (`LATMAP_CHROMIUM`, or `chromium` on the
/// PATH, which `.ci/run` installs from Debian).
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("LATMAP_CHROMIUM") {
        return Some(p.into());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

/// Chromium on `url` with `extra` (`--dump-dom`, `--screenshot=…`): its stdout. It may
/// only reach loopback: every other name fails to resolve and its background
/// services are off.
fn browse(browser: &Path, profile: &Path, extra: &[&str], url: &str) -> String {
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The web page in a real browser: the heatmap is drawn, its cells lead to the paths'
/// pages, and a path's page draws its chart.
#[test]
fn the_web_page_works_in_a_real_browser() {
    use crate::remote::{complete, runs, serve};
    let Some(browser) = chromium() else {
        eprintln!("skipped: no Chromium (install Debian's chromium, or set LATMAP_CHROMIUM)");
        return;
    };
    let _t = timing_lock();
    let dir = Dir::new();
    crate::remote::lab(&dir);
    let (mut server, addr) = serve(&dir, 0, &["--deadline", "60s"]);
    three_agents_sweep(&dir, addr, "2");
    crate::service::until(
        std::time::Duration::from_secs(60),
        "two complete runs",
        || (complete(&runs(addr)) == 2).then_some(()),
    );
    let profile = dir.join("chromium-profile");
    let base = format!("http://{addr}");

    // `/`: the DOM as the browser built it.
    let dom = browse(&browser, &profile, &["--dump-dom"], &format!("{base}/"));
    let heatmap = dom
        .split("id=\"heatmap\"")
        .nth(1)
        .and_then(|rest| rest.split("</figure>").next())
        .unwrap_or_else(|| panic!("no heatmap figure in the DOM:\n{dom}"));
    assert!(heatmap.contains("<svg"), "{heatmap}");
    // Six cells between the three regions, each a link to its path's page.
    let links: Vec<&str> = heatmap
        .split("<a href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(links.len(), 6, "{links:?}");
    assert!(links.iter().all(|l| l.starts_with("/paths/")), "{links:?}");
    assert!(dom.contains("Reported (3): a, b, c"), "{dom}");

    // Follow a cell: the path's page draws the chart (plotters' bands and line).
    let href = links
        .iter()
        .find(|l| l.starts_with("/paths/a/b"))
        .expect("a cell for a → b")
        .replace("&amp;", "&");
    let page = browse(
        &browser,
        &profile,
        &["--dump-dom"],
        &format!("{base}{href}"),
    );
    let chart = page
        .split("class=\"smoke\"")
        .nth(1)
        .and_then(|rest| rest.split("</figure>").next())
        .unwrap_or_else(|| panic!("no chart on the path's page:\n{page}"));
    assert!(
        chart.contains("<svg") && chart.contains("<polyline"),
        "{chart}"
    );
    assert!(chart.contains("a → b (udp), 2 runs"), "{chart}");
    assert!(page.contains("2 of 2") || page.contains("5 of 5"), "{page}");

    // A screenshot of each page: not blank.
    for (name, url) in [
        ("index.png", format!("{base}/")),
        ("path.png", format!("{base}{href}")),
    ] {
        let shot = dir.join(name);
        browse(
            &browser,
            &profile,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,1000",
            ],
            &url,
        );
        let png = resvg::tiny_skia::Pixmap::load_png(&shot).expect("a PNG screenshot");
        let inked = png
            .pixels()
            .iter()
            .filter(|p| (p.red(), p.green(), p.blue()) != (255, 255, 255))
            .count();
        assert!(inked > 5_000, "{name}: {inked} pixels not white");
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait(std::time::Duration::from_secs(30)).success());
}

/// The aggregator judges each path of the runs it assembles against the path's history,
/// as a scheduled sweep does: a step on one path is a warning, then critical.
#[test]
fn serve_flags_a_step_against_the_history_of_its_runs() {
    use crate::remote::{complete, runs, serve};
    let _t = timing_lock();
    let dir = Dir::new();
    crate::remote::lab(&dir);
    lab(&dir, "lab", 100);
    let (mut server, addr) = serve(&dir, 0, &["--deadline", "60s"]);
    let sweeps = |n: usize, total: usize| {
        three_agents_sweep(&dir, addr, &n.to_string());
        crate::service::until(std::time::Duration::from_secs(60), "complete runs", || {
            (complete(&runs(addr)) == total).then_some(())
        });
    };
    sweeps(13, 13);
    lab(&dir, "lab", 113);
    sweeps(2, 15);
    let listed = runs(addr);
    let shifts_of = |id: &str| -> Vec<String> {
        shifts(&crate::service::get(addr, &format!("/v1/runs/{id}")).json())
    };
    let ids: Vec<String> = listed
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 15);
    for id in &ids[..13] {
        assert_eq!(shifts_of(id), Vec::<String>::new(), "quiet run {id}");
    }
    // As in a scheduled sweep, a run whose prober fell behind is not judged.
    let run_of = |id: &str| crate::service::get(addr, &format!("/v1/runs/{id}")).json();
    let mut judged = 0;
    for k in 13..15 {
        let run = run_of(&ids[k]);
        let p = crate::harness::path(&run, "a", "b");
        let lagged = p["lagged"].as_u64().unwrap_or(0);
        let want: Vec<&str> = if lagged > 0 && lagged * 10 >= p["sent"].as_u64().unwrap() {
            vec![]
        } else if k > 13 && !shifts_of(&ids[k - 1]).is_empty() {
            vec!["critical a → b"]
        } else {
            vec!["warning a → b"]
        };
        judged += usize::from(!want.is_empty());
        assert_eq!(shifts(&run), want, "run {}: {}", ids[k], run["anomalies"]);
    }
    assert!(judged > 0, "every run of the step was discounted");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait(std::time::Duration::from_secs(30)).success());
}
