//! `bedside audit verify`: checks the audit trail's hash chain in the database the
//! configuration names (the same `BEDSIDE_DATABASE_URL` the server uses) and prints, for
//! each visit whose chain is broken, where it first breaks, then a summary.
//!
//! Safe to run beside a live server: each visit is read in one snapshot, and SQLite lets
//! readers and the writer work at once. The decisions are `bedside_visit::audit_chain`'s;
//! this module only opens the database and prints.

use crate::config::Config;
use bedside_rooms::storage::{self, StorageError};
use bedside_visit::{ChainReport, VisitId};
use std::io::{self, Write};

/// What the check found; the process exit code follows it (0 intact, 1 broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Intact,
    Broken,
}

/// Why the check could not be made (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    #[error("{0:?} is not a visit id")]
    BadVisitId(String),
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: StorageError,
    },
    #[error("reading the audit trail failed: {0}")]
    Storage(#[from] StorageError),
    #[error("visit {0} has no audit trail in this database")]
    NoTrail(VisitId),
    #[error("writing the report failed: {0}")]
    Output(#[from] io::Error),
}

/// Verifies every visit's chain, or only `visit`'s, writing the report to `out`.
pub async fn verify(
    config: &Config,
    visit: Option<&str>,
    out: &mut impl Write,
) -> Result<Verdict, AuditCliError> {
    let visit = visit
        .map(|v| {
            v.parse::<VisitId>()
                .map_err(|_| AuditCliError::BadVisitId(v.to_owned()))
        })
        .transpose()?;
    // Never create a database here: a mistyped path must not read as "0 visits, intact".
    let storage = storage::connect_existing(config.database.expose())
        .await
        .map_err(|source| AuditCliError::Open {
            url: config.database.to_string(),
            source,
        })?;
    let report = storage.verify_audit(visit).await;
    storage.close().await;
    let report = report?;
    if let Some(visit) = visit
        && report.visits == 0
    {
        return Err(AuditCliError::NoTrail(visit));
    }
    render(&report, out)?;
    Ok(if report.is_intact() {
        Verdict::Intact
    } else {
        Verdict::Broken
    })
}

/// One line per broken visit (`broken: visit ID seq N: KIND (why)`), then a summary line.
pub fn render(report: &ChainReport, out: &mut impl Write) -> io::Result<()> {
    for b in &report.broken {
        writeln!(out, "broken: visit {} {}", b.visit_id, b.at)?;
    }
    let rows = format!(
        "{} row{} chained",
        report.chained_rows,
        plural(report.chained_rows)
    );
    if report.is_intact() {
        write!(
            out,
            "audit trail intact: {} visit{}, {rows}",
            report.visits,
            plural(report.visits)
        )?;
    } else {
        write!(
            out,
            "audit trail BROKEN in {} of {} visit{} ({rows})",
            report.broken.len(),
            report.visits,
            plural(report.visits)
        )?;
    }
    if report.unchained_rows > 0 {
        write!(
            out,
            "; {} row{} written before the chain existed, not covered",
            report.unchained_rows,
            plural(report.unchained_rows)
        )?;
    }
    writeln!(out)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_visit::{Break, BreakKind, BrokenChain};

    fn text(report: &ChainReport) -> String {
        let mut out = Vec::new();
        render(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_intact_report_is_one_summary_line() {
        let report = ChainReport {
            visits: 1,
            chained_rows: 7,
            unchained_rows: 0,
            broken: Vec::new(),
        };
        assert_eq!(
            text(&report),
            "audit trail intact: 1 visit, 7 rows chained\n"
        );
    }

    #[test]
    fn a_broken_report_names_each_visit_and_seq() {
        let report = ChainReport {
            visits: 3,
            chained_rows: 20,
            unchained_rows: 2,
            broken: vec![BrokenChain {
                visit_id: "v-1".into(),
                at: Break {
                    seq: 12,
                    kind: BreakKind::Edited,
                },
            }],
        };
        assert_eq!(
            text(&report),
            "broken: visit v-1 seq 12: edited (the row does not match its hash)\n\
             audit trail BROKEN in 1 of 3 visits (20 rows chained); \
             2 rows written before the chain existed, not covered\n"
        );
    }
}
