//! The audit trail's hash chain, as pure functions: the canonical encoding of a row, its
//! hash, and the walk that finds the first broken link of a visit's chain.
//!
//! Each row of a visit's trail stores `prev_hash` (the `hash` of the visit's row before it,
//! or the visit's [`genesis`] value for its first row) and `hash` = SHA-256 over the row's
//! [`Entry`] and `prev_hash`. Storage also records each chain's *head* (last seq and hash),
//! so rows deleted from the end are noticed too. Editing, deleting, inserting or moving a
//! row then shows up as a broken link, unless whoever did it also recomputed every hash
//! after it: the chain has no secret, so it detects tampering with the rows, not an attacker
//! who rewrites the chain (see `docs/security.md`).
//!
//! Storage does the IO (reads the last hash, writes rows, reads them back); everything that
//! decides lives here, so it is tested without a database.

use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Domain-separation tags: a row hash can never equal a genesis value, and a later
/// version of the encoding gets new tags rather than colliding with this one.
const ROW_TAG: &str = "bedside.audit.row.v1";
const GENESIS_TAG: &str = "bedside.audit.genesis.v1";

/// The hashed fields of one audit row, exactly as stored (text as written, times as integer
/// microseconds), so that verification hashes what the database holds, not what a parser
/// makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub visit_id: &'a str,
    pub tenant: &'a str,
    pub seq: i64,
    pub at: i64,
    pub kind: &'a str,
    pub participant_id: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub role: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// Feeds the canonical encoding into a hasher. Every piece is self-delimiting (a length
/// before every string, a presence byte before every optional field, fixed-width integers),
/// so two different entries can never encode to the same bytes: moving a character from
/// one field to the next, or `None` versus `Some("")`, changes the encoding.
struct Encoder(Sha256);

impl Encoder {
    fn text(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_be_bytes());
        self.0.update(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.0.update([0]),
            Some(s) => {
                self.0.update([1]);
                self.text(s);
            }
        }
    }

    fn int(&mut self, n: i64) {
        self.0.update(n.to_be_bytes());
    }

    fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// Where a visit's chain starts: its first row's `prev_hash`. Derived from the visit id, so
/// a first row copied into another visit does not verify there.
pub fn genesis(visit_id: &str) -> Hash {
    let mut e = Encoder(Sha256::new());
    e.text(GENESIS_TAG);
    e.text(visit_id);
    e.finish()
}

/// The hash of a row that follows `prev`.
pub fn link_hash(entry: &Entry<'_>, prev: &Hash) -> Hash {
    let mut e = Encoder(Sha256::new());
    e.text(ROW_TAG);
    e.text(entry.visit_id);
    e.text(entry.tenant);
    e.int(entry.seq);
    e.int(entry.at);
    e.text(entry.kind);
    e.opt(entry.participant_id);
    e.opt(entry.identity);
    e.opt(entry.role);
    e.opt(entry.actor);
    e.opt(entry.detail);
    e.0.update(prev);
    e.finish()
}

/// Lowercase hex, as stored.
pub fn to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// Parses 64 hex digits (either case); anything else is `None`.
pub fn from_hex(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A row's hashed columns, owned: what verification reads back from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFields {
    pub tenant: String,
    pub at: i64,
    pub kind: String,
    pub participant_id: Option<String>,
    pub identity: Option<String>,
    pub role: Option<String>,
    pub actor: Option<String>,
    pub detail: Option<String>,
}

impl StoredFields {
    fn entry<'a>(&'a self, visit_id: &'a str, seq: i64) -> Entry<'a> {
        Entry {
            visit_id,
            tenant: &self.tenant,
            seq,
            at: self.at,
            kind: &self.kind,
            participant_id: self.participant_id.as_deref(),
            identity: self.identity.as_deref(),
            role: self.role.as_deref(),
            actor: self.actor.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

/// One row of a visit's trail as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub seq: i64,
    /// `None` when the columns could not be read back as written (a column's type was
    /// changed): such a row counts as edited.
    pub fields: Option<StoredFields>,
    /// Hex as stored; `None` when absent or not text.
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// The recorded end of a visit's chain: the seq and hash of the last row written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// What is wrong at a broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The row does not match its own hash (a column was changed), or its hashes were
    /// removed or mangled, or it is not the row the chain's head recorded.
    Edited,
    /// The row links to a row that is no longer there: rows right before it were deleted.
    /// `after` is the row it now follows, if any.
    Deleted { after: Option<i64> },
    /// The chain was written up to the break's seq, which is gone with any rows after
    /// `last`, the last row left (`None`: none left).
    Truncated { last: Option<i64> },
    /// The record of the chain's head is gone, though its rows are there.
    HeadMissing,
    /// The row links to another row of the visit (`links_to`; `None`: the start of the
    /// chain) than the one before it (`after`): rows were moved, or inserted between.
    Reordered {
        links_to: Option<i64>,
        after: Option<i64>,
    },
    /// The row and any after it come after the recorded end of the chain, at seq `head`:
    /// they were added behind the server's back.
    Appended { head: i64 },
}

/// The first broken link of a visit's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    /// The row at which the chain breaks (for [`BreakKind::Truncated`], the missing last row).
    pub seq: i64,
    pub kind: BreakKind,
}

impl Break {
    /// One word for what happened: `edited`, `deleted`, `reordered` or `inserted`.
    pub fn label(&self) -> &'static str {
        match self.kind {
            BreakKind::Edited => "edited",
            BreakKind::Deleted { .. } | BreakKind::Truncated { .. } | BreakKind::HeadMissing => {
                "deleted"
            }
            BreakKind::Reordered { .. } => "reordered",
            BreakKind::Appended { .. } => "inserted",
        }
    }
}

fn seq_or_start(seq: Option<i64>) -> String {
    seq.map_or_else(
        || "the start of the trail".to_owned(),
        |s| format!("seq {s}"),
    )
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {} (", self.seq, self.label())?;
        match self.kind {
            BreakKind::Edited => f.write_str("the row does not match its hash")?,
            BreakKind::Deleted { after } => write!(
                f,
                "the row before it is missing; it now follows {}",
                seq_or_start(after)
            )?,
            BreakKind::Truncated { last } => write!(
                f,
                "the trail was written up to this row but now ends at {}",
                seq_or_start(last)
            )?,
            BreakKind::HeadMissing => f.write_str("the record of the trail's last row is gone")?,
            BreakKind::Reordered { links_to, after } => write!(
                f,
                "it links to {}, not to {} before it",
                seq_or_start(links_to),
                seq_or_start(after)
            )?,
            BreakKind::Appended { head } => {
                write!(f, "the trail was written only up to seq {head}")?
            }
        }
        f.write_str(")")
    }
}

/// The outcome of checking one visit's trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VisitCheck {
    /// Rows covered by the chain.
    pub chained: u64,
    /// Rows written before the chain existed (no hashes, at or below the start mark).
    pub unchained: u64,
    pub broken: Option<Break>,
}

/// Walks a visit's trail and finds its first broken link.
///
/// `rows` are all of the visit's rows in ascending seq order. Rows at or below
/// `legacy_max_seq` (the highest seq when the chain was introduced) that carry no hashes
/// were written before the chain existed: they are counted as unchained and skipped, and
/// the chain starts at [`genesis`] with the first row after them. Any other row without
/// hashes is a break.
pub fn verify(
    visit_id: &str,
    legacy_max_seq: i64,
    rows: &[StoredRow],
    head: Option<&Head>,
) -> VisitCheck {
    let (legacy, chain): (Vec<&StoredRow>, Vec<&StoredRow>) = rows
        .iter()
        .partition(|r| r.seq <= legacy_max_seq && r.prev_hash.is_none() && r.hash.is_none());
    let mut check = VisitCheck {
        chained: chain.len() as u64,
        unchained: legacy.len() as u64,
        broken: None,
    };
    check.broken = first_break(visit_id, &chain, head);
    check
}

fn first_break(visit_id: &str, chain: &[&StoredRow], head: Option<&Head>) -> Option<Break> {
    let start = genesis(visit_id);
    let mut expected = start;
    let mut before: Option<i64> = None;
    for (i, row) in chain.iter().enumerate() {
        let edited = Break {
            seq: row.seq,
            kind: BreakKind::Edited,
        };
        let (Some(prev), Some(hash), Some(fields)) = (
            row.prev_hash.as_deref().and_then(from_hex),
            row.hash.as_deref().and_then(from_hex),
            row.fields.as_ref(),
        ) else {
            return Some(edited);
        };
        if link_hash(&fields.entry(visit_id, row.seq), &prev) != hash {
            return Some(edited);
        }
        if prev != expected {
            // The row is intact but hangs off something other than its predecessor: tell a
            // deletion (what it hangs off is gone) from a move (it is still here).
            let links_to = if prev == start {
                Some(None)
            } else {
                chain
                    .iter()
                    .enumerate()
                    .find(|&(j, r)| j != i && r.hash.as_deref().and_then(from_hex) == Some(prev))
                    .map(|(_, r)| Some(r.seq))
            };
            let kind = match links_to {
                Some(links_to) => BreakKind::Reordered {
                    links_to,
                    after: before,
                },
                None => BreakKind::Deleted { after: before },
            };
            return Some(Break { seq: row.seq, kind });
        }
        expected = hash;
        before = Some(row.seq);
    }
    let last = chain.last();
    match (last, head) {
        (None, None) => None,
        (Some(last), None) => Some(Break {
            seq: last.seq,
            kind: BreakKind::HeadMissing,
        }),
        (None, Some(head)) => Some(Break {
            seq: head.seq,
            kind: BreakKind::Truncated { last: None },
        }),
        (Some(last), Some(head)) if last.seq < head.seq => Some(Break {
            seq: head.seq,
            kind: BreakKind::Truncated {
                last: Some(last.seq),
            },
        }),
        (Some(last), Some(head)) if last.seq > head.seq => {
            let first_after = chain
                .iter()
                .find(|r| r.seq > head.seq)
                .map_or(last.seq, |r| r.seq);
            Some(Break {
                seq: first_after,
                kind: BreakKind::Appended { head: head.seq },
            })
        }
        (Some(last), Some(head)) => {
            // Same seq: the row must be the very one the head recorded. A valid-looking
            // row with another hash was replaced, its hashes recomputed.
            let same = from_hex(&head.hash)
                .is_some_and(|h| Some(h) == last.hash.as_deref().and_then(from_hex));
            (!same).then_some(Break {
                seq: last.seq,
                kind: BreakKind::Edited,
            })
        }
    }
}

/// A visit whose chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenChain {
    /// The visit id as stored (kept as text: a tampered row's id may not parse).
    pub visit_id: String,
    pub at: Break,
}

/// The outcome of checking many visits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainReport {
    /// Visits with any audit rows or a recorded chain.
    pub visits: u64,
    pub chained_rows: u64,
    pub unchained_rows: u64,
    /// One entry per broken visit, with its first broken link.
    pub broken: Vec<BrokenChain>,
}

impl ChainReport {
    pub fn add(&mut self, visit_id: &str, check: VisitCheck) {
        self.visits += 1;
        self.chained_rows += check.chained;
        self.unchained_rows += check.unchained;
        if let Some(at) = check.broken {
            self.broken.push(BrokenChain {
                visit_id: visit_id.to_owned(),
                at,
            });
        }
    }

    pub fn is_intact(&self) -> bool {
        self.broken.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISIT: &str = "6f1c2a9e-0d7b-4c55-9a38-2f0e4b1d7c60";

    fn fields(at: i64, kind: &str, detail: Option<&str>) -> StoredFields {
        StoredFields {
            tenant: "clinic-a".into(),
            at,
            kind: kind.into(),
            participant_id: Some("p_00000000000000aa".into()),
            identity: Some("pt-1".into()),
            role: Some("patient".into()),
            actor: None,
            detail: detail.map(Into::into),
        }
    }

    /// A correctly chained trail of `n` rows with seqs 10, 20, 30, ... and its head.
    fn trail(n: i64) -> (Vec<StoredRow>, Head) {
        let mut prev = genesis(VISIT);
        let mut rows = Vec::new();
        for i in 1..=n {
            let seq = i * 10;
            let f = fields(1_000 + i, "joined", None);
            let hash = link_hash(&f.entry(VISIT, seq), &prev);
            rows.push(StoredRow {
                seq,
                fields: Some(f),
                prev_hash: Some(to_hex(&prev)),
                hash: Some(to_hex(&hash)),
            });
            prev = hash;
        }
        let head = Head {
            seq: n * 10,
            hash: to_hex(&prev),
        };
        (rows, head)
    }

    fn broken(rows: &[StoredRow], head: &Head) -> Option<Break> {
        verify(VISIT, 0, rows, Some(head)).broken
    }

    fn entry<'a>(detail: Option<&'a str>, actor: Option<&'a str>) -> Entry<'a> {
        Entry {
            visit_id: VISIT,
            tenant: "clinic-a",
            seq: 1,
            at: 2,
            kind: "left",
            participant_id: None,
            identity: None,
            role: None,
            actor,
            detail,
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let h = genesis(VISIT);
        let hex = to_hex(&h);
        assert_eq!(hex.len(), 64);
        assert_eq!(from_hex(&hex), Some(h));
        assert_eq!(from_hex(&hex.to_uppercase()), Some(h));
        assert_eq!(from_hex(&hex[1..]), None);
        assert_eq!(from_hex(&format!("{}g", &hex[1..])), None);
        assert_eq!(from_hex(""), None);
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        let g = genesis(VISIT);
        // None versus an empty string.
        assert_ne!(
            link_hash(&entry(None, None), &g),
            link_hash(&entry(Some(""), None), &g)
        );
        // The same text in the next field.
        assert_ne!(
            link_hash(&entry(Some("x"), None), &g),
            link_hash(&entry(None, Some("x")), &g)
        );
        // A character moved across a field boundary.
        let a = Entry {
            identity: Some("ab"),
            role: Some("c"),
            ..entry(None, None)
        };
        let b = Entry {
            identity: Some("a"),
            role: Some("bc"),
            ..entry(None, None)
        };
        assert_ne!(link_hash(&a, &g), link_hash(&b, &g));
        // Every field counts, the predecessor too.
        let base = entry(None, None);
        let h = link_hash(&base, &g);
        for other in [
            Entry { seq: 2, ..base },
            Entry { at: 3, ..base },
            Entry {
                kind: "ended",
                ..base
            },
            Entry {
                tenant: "clinic-b",
                ..base
            },
            Entry {
                visit_id: "other",
                ..base
            },
        ] {
            assert_ne!(link_hash(&other, &g), h, "{other:?}");
        }
        assert_ne!(link_hash(&base, &genesis("other")), h);
        // Deterministic.
        assert_eq!(link_hash(&base, &g), h);
    }

    #[test]
    fn genesis_is_per_visit_and_never_a_row_hash() {
        assert_ne!(genesis(VISIT), genesis("another-visit"));
        assert_eq!(genesis(VISIT), genesis(VISIT));
    }

    #[test]
    fn an_intact_trail_verifies() {
        let (rows, head) = trail(5);
        let check = verify(VISIT, 0, &rows, Some(&head));
        assert_eq!(
            check,
            VisitCheck {
                chained: 5,
                unchained: 0,
                broken: None
            }
        );
        // Nothing at all is fine too (a visit from before the chain, say).
        assert_eq!(verify(VISIT, 0, &[], None), VisitCheck::default());
    }

    #[test]
    fn an_edited_column_is_found_at_its_row() {
        let (mut rows, head) = trail(5);
        if let Some(f) = rows[2].fields.as_mut() {
            f.detail = Some("forged".into());
        }
        let b = broken(&rows, &head).expect("broken");
        assert_eq!(
            b,
            Break {
                seq: 30,
                kind: BreakKind::Edited
            }
        );
        assert_eq!(b.label(), "edited");

        let (mut rows, head) = trail(5);
        if let Some(f) = rows[0].fields.as_mut() {
            f.at += 1;
        }
        assert_eq!(broken(&rows, &head).map(|b| b.seq), Some(10));
    }

    #[test]
    fn removed_mangled_or_unreadable_hashes_are_edits() {
        for mangle in [
            |r: &mut StoredRow| r.hash = None,
            |r: &mut StoredRow| r.prev_hash = None,
            |r: &mut StoredRow| r.hash = Some("not hex".into()),
            |r: &mut StoredRow| r.fields = None,
        ] {
            let (mut rows, head) = trail(3);
            mangle(&mut rows[1]);
            assert_eq!(
                broken(&rows, &head),
                Some(Break {
                    seq: 20,
                    kind: BreakKind::Edited
                })
            );
        }
    }

    #[test]
    fn a_deleted_row_breaks_the_link_of_the_next() {
        let (mut rows, head) = trail(5);
        rows.remove(2);
        let b = broken(&rows, &head).expect("broken");
        assert_eq!(
            b,
            Break {
                seq: 40,
                kind: BreakKind::Deleted { after: Some(20) }
            }
        );
        assert_eq!(b.label(), "deleted");
        assert_eq!(
            b.to_string(),
            "seq 40: deleted (the row before it is missing; it now follows seq 20)"
        );
    }

    #[test]
    fn deleting_the_first_rows_is_found() {
        let (mut rows, head) = trail(3);
        rows.remove(0);
        assert_eq!(
            broken(&rows, &head),
            Some(Break {
                seq: 20,
                kind: BreakKind::Deleted { after: None }
            })
        );
    }

    #[test]
    fn deleting_the_last_rows_is_found_through_the_head() {
        let (mut rows, head) = trail(4);
        rows.truncate(2);
        let b = broken(&rows, &head).expect("broken");
        assert_eq!(
            b,
            Break {
                seq: 40,
                kind: BreakKind::Truncated { last: Some(20) }
            }
        );
        assert_eq!(b.label(), "deleted");
        // Every row gone.
        assert_eq!(
            broken(&[], &head),
            Some(Break {
                seq: 40,
                kind: BreakKind::Truncated { last: None }
            })
        );
        // The head gone, rows intact.
        let (rows, _) = trail(2);
        assert_eq!(
            verify(VISIT, 0, &rows, None).broken,
            Some(Break {
                seq: 20,
                kind: BreakKind::HeadMissing
            })
        );
    }

    #[test]
    fn a_row_moved_ahead_of_its_predecessor_is_reordered() {
        // Row 30 moved to seq 15, its own hash recomputed for the new seq (as a careful
        // forger would) but still linking to row 20, which now comes after it.
        let (mut rows, head) = trail(4);
        let mut moved = rows.remove(2);
        moved.seq = 15;
        let prev = moved.prev_hash.as_deref().and_then(from_hex).expect("prev");
        let f = moved.fields.as_ref().expect("fields");
        moved.hash = Some(to_hex(&link_hash(&f.entry(VISIT, 15), &prev)));
        rows.insert(1, moved);
        let b = broken(&rows, &head).expect("broken");
        assert_eq!(
            b,
            Break {
                seq: 15,
                kind: BreakKind::Reordered {
                    links_to: Some(20),
                    after: Some(10)
                }
            }
        );
        assert_eq!(b.label(), "reordered");
        assert_eq!(
            b.to_string(),
            "seq 15: reordered (it links to seq 20, not to seq 10 before it)"
        );
    }

    #[test]
    fn a_chain_restarted_midway_is_reordered() {
        let (mut rows, head) = trail(3);
        let g = genesis(VISIT);
        let f = rows[1].fields.clone().expect("fields");
        rows[1].prev_hash = Some(to_hex(&g));
        rows[1].hash = Some(to_hex(&link_hash(&f.entry(VISIT, 20), &g)));
        assert_eq!(
            broken(&rows, &head),
            Some(Break {
                seq: 20,
                kind: BreakKind::Reordered {
                    links_to: None,
                    after: Some(10)
                }
            })
        );
    }

    #[test]
    fn a_row_inserted_in_between_is_found_after_it() {
        // A forged row chained onto row 20, slotted in before row 30.
        let (mut rows, head) = trail(3);
        let prev = from_hex(rows[1].hash.as_deref().expect("hash")).expect("hex");
        let f = fields(1_002, "admitted", None);
        let hash = link_hash(&f.entry(VISIT, 25), &prev);
        rows.insert(
            2,
            StoredRow {
                seq: 25,
                fields: Some(f),
                prev_hash: Some(to_hex(&prev)),
                hash: Some(to_hex(&hash)),
            },
        );
        assert_eq!(
            broken(&rows, &head),
            Some(Break {
                seq: 30,
                kind: BreakKind::Reordered {
                    links_to: Some(20),
                    after: Some(25)
                }
            })
        );
    }

    #[test]
    fn rows_appended_behind_the_servers_back_are_inserted() {
        let (rows, head) = trail(3);
        let (longer, _) = trail(5);
        assert_eq!(rows[..], longer[..3]);
        let b = broken(&longer, &head).expect("broken");
        assert_eq!(
            b,
            Break {
                seq: 40,
                kind: BreakKind::Appended { head: 30 }
            }
        );
        assert_eq!(b.label(), "inserted");
    }

    #[test]
    fn a_replaced_last_row_differs_from_the_head() {
        let (mut rows, head) = trail(3);
        let last = rows.last_mut().expect("row");
        let prev = last.prev_hash.as_deref().and_then(from_hex).expect("prev");
        let f = fields(9_999, "ended", Some("ended_by_api"));
        last.hash = Some(to_hex(&link_hash(&f.entry(VISIT, 30), &prev)));
        last.fields = Some(f);
        assert_eq!(
            broken(&rows, &head),
            Some(Break {
                seq: 30,
                kind: BreakKind::Edited
            })
        );
    }

    #[test]
    fn a_row_copied_from_another_visit_does_not_verify() {
        let (rows, head) = trail(2);
        assert_eq!(
            verify("another-visit", 0, &rows, Some(&head)).broken,
            Some(Break {
                seq: 10,
                kind: BreakKind::Edited
            })
        );
    }

    #[test]
    fn rows_from_before_the_chain_are_unchained_and_the_chain_starts_after_them() {
        let legacy = |seq| StoredRow {
            seq,
            fields: Some(fields(1, "created", None)),
            prev_hash: None,
            hash: None,
        };
        // Seqs 10..=50 chained; put two legacy rows at 1 and 2 with the mark at 2.
        let (chained, head) = trail(5);
        let mut rows = vec![legacy(1), legacy(2)];
        rows.extend(chained.iter().cloned());
        let check = verify(VISIT, 2, &rows, Some(&head));
        assert_eq!(
            check,
            VisitCheck {
                chained: 5,
                unchained: 2,
                broken: None
            }
        );
        // Stripping a chained row's hashes does not make it legacy: it is above the mark.
        let mut stripped = rows.clone();
        stripped[3].prev_hash = None;
        stripped[3].hash = None;
        assert_eq!(
            verify(VISIT, 2, &stripped, Some(&head)).broken,
            Some(Break {
                seq: 20,
                kind: BreakKind::Edited
            })
        );
    }

    #[test]
    fn reports_add_up() {
        let mut report = ChainReport::default();
        report.add(
            "a",
            VisitCheck {
                chained: 3,
                unchained: 1,
                broken: None,
            },
        );
        assert!(report.is_intact());
        report.add(
            "b",
            VisitCheck {
                chained: 2,
                unchained: 0,
                broken: Some(Break {
                    seq: 7,
                    kind: BreakKind::Edited,
                }),
            },
        );
        assert!(!report.is_intact());
        assert_eq!(
            (report.visits, report.chained_rows, report.unchained_rows),
            (2, 5, 1)
        );
        assert_eq!(report.broken[0].visit_id, "b");
    }
}
