//! The RTT matrix of a run as a text table: rows are sources, columns targets, cells the
//! p50 RTT in milliseconds, with the loss when there is any.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use crate::config::ProbeKind;
use crate::run::Run;

use super::escape::terminal_line;

/// The matrix of `kind` paths, one row per source region. A cell shows `p50` in ms and
/// `loss%` when there was loss; `·` on the diagonal, `no data` when the source region
/// did not report, `unreach` when nothing came back, blank when the path was not probed.
pub fn rtt_matrix(run: &Run, kind: ProbeKind) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec![format!("{kind} p50 ms  src \\ dst")];
    header.extend(
        run.regions
            .iter()
            .map(|r| terminal_line(&r.name).into_owned()),
    );
    table.set_header(header);
    for source in &run.regions {
        let mut row = vec![terminal_line(&source.name).into_owned()];
        for target in &run.regions {
            let cell = if source.name == target.name {
                "·".to_string()
            } else if !source.reported {
                "no data".to_string()
            } else {
                match run.path(&source.name, &target.name, kind) {
                    None => String::new(),
                    Some(p) => match (&p.rtt_us, p.loss) {
                        (None, _) if p.sent == 0 => "not sent".to_string(),
                        (None, _) => "unreach".to_string(),
                        (Some(rtt), Some(loss)) if loss > 0.0 => {
                            format!("{} {}%", ms(rtt.p50), pct(loss))
                        }
                        (Some(rtt), _) => ms(rtt.p50),
                    },
                }
            };
            row.push(cell);
        }
        table.add_row(row);
    }
    for i in 1..=run.regions.len() {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn ms(us: u64) -> String {
    crate::units::us_as_ms(us as f64)
}

fn pct(loss: f64) -> String {
    let p = loss * 100.0;
    if p >= 10.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}
