//! Meaning of `[lab]`: the region list (the `[[region]]` entries, or a matrix's names),
//! the regions matched against the lab's matrices, the geo mode's locations and the
//! faults' region names. Matrices arrive already parsed (`matrix`); no file input here.

use std::path::PathBuf;

use super::keys::fault;
use super::keys::lab::{BASE_MS, INFLATION, JITTER_MS, LOSS, MATRIX, MODE, PORT, SEED};
use super::matrix::NamedMatrix;
use super::raw::{At, Problem, RawConfig, Span, Table};
use super::suggest::closest;
use super::validate::CheckedRegion;
use super::{LabFault, LabMode, LabSettings, LabSource, MAX_REGIONS, Region, SquareMatrix};

/// Most regions of a netns lab: region N (1-based) has 198.18.N.0/24 and 198.19.N.2.
pub const NETNS_MAX_REGIONS: usize = 255;

/// One matrix file, read and parsed.
#[derive(Debug)]
pub(super) struct MatrixInput {
    /// The path, resolved against the config file's folder.
    pub file: PathBuf,
    /// The same, for messages.
    pub display: String,
    /// The header's names, if the header is valid.
    pub header: Option<Vec<String>>,
    /// The matrix, if the whole file is valid.
    pub matrix: Option<NamedMatrix>,
}

/// The lab's matrix files.
#[derive(Debug, Default)]
pub(super) struct LabInput {
    /// `None` if the file could not be read (a problem was reported).
    pub rtt: Option<MatrixInput>,
    /// `None` if no loss file is given; `Some(None)` if it could not be read.
    pub loss: Option<Option<MatrixInput>>,
}

/// At least two regions (given as `[[region]]` entries, or by a matrix's header).
pub(super) fn enough_regions(
    raw: &RawConfig,
    from_matrix: Option<(&Span, &MatrixInput, usize)>,
    out: &mut Vec<Problem>,
) {
    if let Some((span, input, n)) = from_matrix {
        if n < 2 {
            out.push(Problem::new(
                span.clone(),
                format!(
                    "{} names {n} region; latmap measures paths between regions: add at least one more \
                     (or [[region]] entries)",
                    input.display
                ),
            ));
        }
        return;
    }
    if raw.broken.contains(&"region") || raw.broken.contains(&"lab") {
        return; // Reported as such; counting would mislead.
    }
    let in_lab = raw.lab.is_some();
    let what = if in_lab {
        "a name"
    } else {
        "a name and targets"
    };
    match raw.regions.as_slice() {
        [] if in_lab => {}
        [] => out.push(Problem::new(0..0, format!("no regions; add at least two [[region]] tables, each with {what}"))),
        [only] => out.push(Problem::new(
            only.table.span.clone(),
            format!("only one region; latmap measures paths between regions: add at least one more [[region]] with {what}"),
        )),
        _ => {}
    }
}

/// `[lab] mode`: `None` if unusable (reported).
pub(super) fn lab_mode(lab: &Table, out: &mut Vec<Problem>) -> Option<LabMode> {
    let Some(mode) = lab.text(&MODE) else {
        return (!lab.is_broken(&MODE)).then_some(LabMode::Loopback);
    };
    match mode.value {
        "loopback" => Some(LabMode::Loopback),
        "netns" => Some(LabMode::Netns),
        other => {
            let hint = match closest(other, &["loopback", "netns"]) {
                Some(best) => format!("did you mean {best:?}? The modes are"),
                None => "use".to_string(),
            };
            out.push(Problem::new(
                mode.span.clone(),
                format!(
                    "unknown lab mode {other:?}; {hint} \"loopback\" (loopback addresses, no root) or \
                     \"netns\" (network namespaces behind an emulating core, needs root)"
                ),
            ));
            None
        }
    }
}

pub(super) fn lab(
    lab: &Table,
    mode: Option<LabMode>,
    raw: &RawConfig,
    checked: Vec<CheckedRegion>,
    input: LabInput,
    out: &mut Vec<Problem>,
) -> (Option<Vec<Region>>, Option<LabSettings>) {
    // The values are in their ranges (checked as they were read); a broken one is None.
    let jitter_ms = lab.number_or_default(&JITTER_MS);
    let port = lab
        .integer_or_default(&PORT)
        .and_then(|p| u16::try_from(p).ok());
    let seed = lab
        .integer_or_default(&SEED)
        .and_then(|s| u64::try_from(s).ok());

    let (regions, source) = match lab.text(&MATRIX) {
        Some(matrix_key) => matrix_lab(lab, raw, &matrix_key, checked, input, out),
        None => geo_lab(lab, raw, checked, out),
    };
    if let Some(regions) = &regions
        && regions.len() > MAX_REGIONS
        && raw.regions.len() <= MAX_REGIONS
    {
        // (More [[region]] tables than that are reported where they are.)
        let at = lab
            .text(&MATRIX)
            .map_or(lab.span.clone(), |m| m.span.clone());
        out.push(Problem::new(
            at,
            format!(
                "this lab has {} regions; a fleet holds at most {MAX_REGIONS}, so use a smaller matrix",
                regions.len()
            ),
        ));
    }
    if let (Some(LabMode::Netns), Some(regions)) = (mode, &regions)
        && regions.len() > NETNS_MAX_REGIONS
    {
        let at = lab.text(&MODE).map_or(lab.span.clone(), |m| m.span.clone());
        out.push(Problem::new(
            at,
            format!(
                "a netns lab holds at most {NETNS_MAX_REGIONS} regions (one /24 of 198.18.0.0/16 each) and \
                 this one has {}; use mode = \"loopback\" or fewer regions",
                regions.len()
            ),
        ));
    }
    let names: Option<Vec<&str>> = regions
        .as_ref()
        .map(|r| r.iter().map(|r| r.name.as_str()).collect());
    let faults: Vec<Option<LabFault>> = raw
        .faults
        .iter()
        .map(|f| fault(f, names.as_deref(), out))
        .collect();
    let faults: Option<Vec<LabFault>> = faults.into_iter().collect();
    let settings = (|| {
        Some(LabSettings {
            mode: mode?,
            source: source?,
            jitter_ms: jitter_ms?,
            port: port?,
            seed: seed?,
            faults: faults?,
        })
    })();
    (regions, settings)
}

/// A lab whose RTTs come from `matrix` (and loss from `loss`).
fn matrix_lab(
    lab: &Table,
    raw: &RawConfig,
    matrix_key: &At<&str>,
    checked: Vec<CheckedRegion>,
    input: LabInput,
    out: &mut Vec<Problem>,
) -> (Option<Vec<Region>>, Option<LabSource>) {
    for key in [&INFLATION, &BASE_MS] {
        if let Some(v) = lab.number(key) {
            let key = key.name;
            out.push(Problem::new(
                v.key.clone(),
                format!("{key} only applies to a lab without a matrix (RTTs from locations); remove it, or remove matrix"),
            ));
        }
    }
    let rtt = input.rtt;

    // The region list: the config's, or the matrix's names.
    let regions: Option<Vec<Region>> = if raw.regions.is_empty() {
        let rtt = rtt.as_ref();
        rtt.and_then(|r| Some((r, r.header.as_ref()?)))
            .map(|(rtt, names)| {
                enough_regions(raw, Some((&matrix_key.span, rtt, names.len())), out);
                names
                    .iter()
                    .map(|n| Region {
                        name: n.clone(),
                        location: None,
                        targets: Vec::new(),
                        source: None,
                    })
                    .collect()
            })
    } else {
        enough_regions(raw, None, out);
        if let Some((rtt, names)) = rtt.as_ref().and_then(|r| Some((r, r.header.as_ref()?))) {
            for c in &checked {
                if !names.contains(&c.region.name) {
                    out.push(not_in_matrix(
                        &c.region.name,
                        &c.name_span,
                        &rtt.display,
                        names,
                    ));
                }
            }
        }
        Some(checked.into_iter().map(|c| c.region).collect())
    };
    let Some(rtt) = rtt else {
        return (regions, None); // Unreadable: already reported.
    };

    // The loss file must name the same regions as the RTT file.
    let loss = match (lab.text(&LOSS), input.loss) {
        (Some(key), Some(Some(loss))) => {
            if let (Some(rtt_names), Some(loss_names)) = (&rtt.header, &loss.header) {
                same_names(
                    &key,
                    &rtt.display,
                    rtt_names,
                    &loss.display,
                    loss_names,
                    out,
                );
            }
            Some(loss)
        }
        (Some(_), _) => return (regions, None), // unreadable: already reported
        (None, _) => None,
    };

    let source = (|| {
        let regions = regions.as_ref()?;
        let rtt_matrix = rtt.matrix.as_ref()?;
        let rtt_ms = square(rtt_matrix, regions)?;
        let loss_pct = match &loss {
            Some(l) => square(l.matrix.as_ref()?, regions)?,
            None => zeros(regions.len()),
        };
        Some(LabSource::Matrix {
            rtt_file: rtt.file.clone(),
            loss_file: loss.as_ref().map(|l| l.file.clone()),
            rtt_ms,
            loss_pct,
        })
    })();
    (regions, source)
}

fn not_in_matrix(name: &str, span: &Span, file: &str, names: &[String]) -> Problem {
    let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = match closest(name, &candidates) {
        Some(best) => format!("did you mean {best:?}? Otherwise add"),
        None => "add".to_string(),
    };
    Problem::new(
        span.clone(),
        format!(
            "region {name:?} is not in {file}; {hint} a row and a column for it, or remove the region"
        ),
    )
}

fn same_names(
    key: &At<&str>,
    rtt: &str,
    rtt_names: &[String],
    loss: &str,
    loss_names: &[String],
    out: &mut Vec<Problem>,
) {
    let missing: Vec<&str> = rtt_names
        .iter()
        .filter(|n| !loss_names.contains(n))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = loss_names
        .iter()
        .filter(|n| !rtt_names.contains(n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        out.push(Problem::new(
            key.span.clone(),
            format!(
                "{loss} lacks {} from {rtt}; the loss file needs the same region names",
                quoted(&missing)
            ),
        ));
    }
    if !extra.is_empty() {
        out.push(Problem::new(
            key.span.clone(),
            format!(
                "{loss} has {} that {rtt} lacks; the loss file needs the same region names",
                quoted(&extra)
            ),
        ));
    }
}

/// The sub-matrix for `regions`, in their order (each must be in `m`).
fn square(m: &NamedMatrix, regions: &[Region]) -> Option<SquareMatrix> {
    let index: Option<Vec<usize>> = regions.iter().map(|r| m.index_of(&r.name)).collect();
    let index = index?;
    let cells = index
        .iter()
        .map(|&i| {
            index
                .iter()
                .map(|&j| {
                    if i == j {
                        None
                    } else {
                        m.cells.get(i)?.get(j).copied().flatten()
                    }
                })
                .collect()
        })
        .collect();
    Some(SquareMatrix { cells })
}

/// All-zero loss (`None` on the diagonal).
fn zeros(n: usize) -> SquareMatrix {
    SquareMatrix {
        cells: (0..n)
            .map(|i| (0..n).map(|j| (i != j).then_some(0.0)).collect())
            .collect(),
    }
}

/// A lab whose RTTs come from the regions' locations.
fn geo_lab(
    lab: &Table,
    raw: &RawConfig,
    checked: Vec<CheckedRegion>,
    out: &mut Vec<Problem>,
) -> (Option<Vec<Region>>, Option<LabSource>) {
    if let Some(loss) = lab.text(&LOSS) {
        out.push(Problem::new(
            loss.key.clone(),
            "loss needs a matrix: a loss file goes with an RTT file; set matrix = \"...\" too, or remove loss",
        ));
    }
    let inflation = lab.number_or_default(&INFLATION);
    let base_ms = lab.number_or_default(&BASE_MS);
    // A misspelt or broken `matrix` key: the lab's mode is unknown.
    let mode_unsure = lab.is_broken(&MATRIX);
    if raw.regions.is_empty() {
        if !mode_unsure && !raw.broken.contains(&"region") {
            out.push(Problem::new(
            lab.span.clone(),
            "a lab needs regions: add [[region]] entries with a name and a location, or set matrix = \"...\" \
             to take them from a CSV file",
        ));
        }
    } else {
        enough_regions(raw, None, out);
    }
    for c in &checked {
        if c.region.location.is_none() && !c.location_key && !mode_unsure {
            out.push(Problem::new(
                c.name_span.clone(),
                format!(
                    "region {:?} has no location, and a lab without a matrix derives RTTs from locations; add \
                     location = {{ lat = ..., lon = ... }} or set [lab] matrix",
                    c.region.name
                ),
            ));
        }
    }
    let source = (|| {
        Some(LabSource::Geo {
            inflation: inflation?,
            base_ms: base_ms?,
        })
    })();
    (
        Some(checked.into_iter().map(|c| c.region).collect()),
        source,
    )
}

/// One `[[lab.fault]]`; `names` are the lab's regions when known.
fn fault(raw: &Table, names: Option<&[&str]>, out: &mut Vec<Problem>) -> Option<LabFault> {
    let mut ok = true;
    let (source, target) = (raw.text(&fault::SOURCE), raw.text(&fault::TARGET));
    for end in [&source, &target].into_iter().flatten() {
        if let Some(names) = names
            && !names.contains(&end.value)
        {
            ok = false;
            let hint = match closest(end.value, names) {
                Some(best) => format!("did you mean {best:?}?"),
                None => format!("use one of {}", quoted(names)),
            };
            out.push(Problem::new(
                end.span.clone(),
                format!("fault names an unknown region {:?}; {hint}", end.value),
            ));
        }
    }
    let broken = |key| raw.broken.contains(&key);
    match (&source, &target) {
        (None, None) if !broken("source") && !broken("target") => {
            ok = false;
            out.push(Problem::new(
                raw.span.clone(),
                "a fault needs a source or a target region (or both); add source = \"...\" or target = \"...\"",
            ));
        }
        (Some(s), Some(t)) if s.value == t.value => {
            ok = false;
            out.push(Problem::new(
                t.span.clone(),
                format!(
                    "a fault from {:?} to itself has no path to act on; name two different regions",
                    s.value
                ),
            ));
        }
        _ => {}
    }
    if broken("extra_ms") || broken("loss_pct") {
        return None; // Reported as such.
    }
    let extra_ms = raw.number(&fault::EXTRA_MS).map_or(0.0, |v| v.value);
    let loss_pct = raw.number(&fault::LOSS_PCT).map_or(0.0, |v| v.value);
    if extra_ms == 0.0 && loss_pct == 0.0 && !broken("extra_ms") && !broken("loss_pct") {
        out.push(Problem::new(
            raw.span.clone(),
            "this fault changes nothing; set extra_ms or loss_pct above 0",
        ));
        return None;
    }
    ok.then(|| LabFault {
        source: source.map(|s| s.value.to_string()),
        target: target.map(|t| t.value.to_string()),
        both_directions: raw.flag(&fault::BOTH_DIRECTIONS).is_some_and(|b| b.value),
        extra_ms,
        loss_pct,
    })
}

/// `"a", "b", "c"` (at most eight, then "...").
fn quoted(names: &[&str]) -> String {
    let mut s: Vec<String> = names.iter().take(8).map(|n| format!("{n:?}")).collect();
    if names.len() > 8 {
        s.push(format!("and {} more", names.len() - 8));
    }
    s.join(", ")
}
