//! The error output of `latmap::config::load` for every broken configuration under
//! `tests/fixtures/config/bad-*.toml`, as insta snapshots (`tests/snapshots/`).
//!
//! A new case is a new fixture file plus a line in the list below; a test checks that no
//! fixture is left out. File names in the output are relative to the fixture folder, so
//! the snapshots do not depend on where the repository is checked out.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// Loads `file` from the fixture folder and snapshots its error output under the file's
/// name; the snapshot's header names the fixture.
fn snapshot(file: &str) {
    let dir = fixtures();
    let path = dir.join(file);
    let err = match latmap::config::load(&path) {
        Ok(config) => panic!("{file} should not load, but gave {config:#?}"),
        Err(err) => err,
    };
    let output = err.to_string().replace(&format!("{}/", dir.display()), "");
    assert_eq!(
        output.lines().count(),
        err.diagnostics.len(),
        "one line per diagnostic"
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_input_file(&path);
    settings.set_omit_expression(true);
    let name = file.trim_end_matches(".toml");
    settings.bind(|| insta::assert_snapshot!(name, output));
}

macro_rules! bad_configs {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                snapshot($file);
            }
        )*

        /// Every `bad-*.toml` fixture has a test above.
        #[test]
        fn every_bad_fixture_is_tested() {
            let listed = [$($file),*];
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(fixtures()).expect("fixture folder") {
                let name = entry.expect("fixture entry").file_name().to_string_lossy().into_owned();
                if name.starts_with("bad-") && name.ends_with(".toml") && !listed.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
            assert!(missing.is_empty(), "add these fixtures to bad_configs!: {missing:?}");
        }
    };
}

bad_configs! {
    syntax_error => "bad-syntax.toml",
    unknown_keys_with_and_without_suggestion => "bad-unknown-key.toml",
    duplicate_region => "bad-dup-region.toml",
    duration_given_as_a_number => "bad-duration-type.toml",
    bad_targets_and_source => "bad-target.toml",
    missing_and_empty_targets => "bad-missing-targets.toml",
    tcp_target_without_port => "bad-tcp-no-port.toml",
    lab_region_with_targets => "bad-lab-region-targets.toml",
    geo_lab_region_without_location => "bad-geo-no-location.toml",
    fault_naming_unknown_region => "bad-fault-region.toml",
    csv_cell_not_a_number => "bad-csv-number.toml",
    csv_ragged_rows => "bad-csv-ragged.toml",
    csv_file_missing => "bad-csv-missing.toml",
    csv_bad_header => "bad-csv-structure.toml",
    csv_bad_rows => "bad-csv-rows.toml",
    many_problems_at_once => "bad-many.toml",
    lab_kinds_and_geo_keys => "bad-lab-kinds.toml",
    lab_mode_misspelt => "bad-lab-mode.toml",
    one_region => "bad-one-region.toml",
    empty_file => "bad-empty.toml",
    not_utf8 => "bad-not-utf8.toml",
    loss_file_with_other_names => "bad-loss-names.toml",
    values_out_of_range => "bad-ranges.toml",
    region_not_in_matrix => "bad-matrix-region-missing.toml",
    wrong_table_shapes => "bad-shape.toml",
    thresholds_out_of_range_and_unknown => "bad-thresholds.toml",
}

#[test]
fn unreadable_file_names_the_path() {
    let path = fixtures().join("no-such-config.toml");
    let err = latmap::config::load(&path).expect_err("missing file");
    assert_eq!(err.diagnostics.len(), 1);
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (1, 1));
    assert!(
        d.message.contains(&path.display().to_string()),
        "{}",
        d.message
    );
    assert!(d.message.contains("check the path"), "{}", d.message);
}
