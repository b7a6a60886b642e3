//! Many rows in one statement: `INSERT INTO t (...) SELECT ... FROM <the rows as JSON>`,
//! written once for both databases. A write batch's audit rows, events and participants go
//! in one statement per table instead of one per row: on a busy machine every statement is
//! a round trip to the database that the whole batch, and every notice held for it, waits
//! behind. Bound as one JSON value, the statement's text does not vary with the number of
//! rows, so each connection keeps it prepared: a statement prepared afresh costs
//! PostgreSQL a round trip more (sqlx parses and describes it first).

use super::StorageError;
use super::dialect::{self, Dialect};
use super::pending::Pending;

/// A value of a row: text or an integer, either possibly NULL.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

/// Rows for one table, inserted in one statement.
pub(super) struct Rows {
    /// `INSERT INTO t (a, b, c)`.
    head: &'static str,
    /// What follows the rows (`ON CONFLICT ...`), or nothing.
    tail: &'static str,
    width: usize,
    values: Vec<Value>,
}

impl Rows {
    pub(super) fn new(head: &'static str, width: usize, tail: &'static str) -> Self {
        Self {
            head,
            tail,
            width,
            values: Vec::new(),
        }
    }

    /// Adds a row of exactly `width` values. A column holds one kind of value (text or
    /// integer) in every row.
    pub(super) fn push<const N: usize>(&mut self, row: [Value; N]) {
        debug_assert_eq!(N, self.width);
        self.values.extend(row);
    }

    /// Holds the insert of the rows pushed so far (see [`Pending`]), in the order they
    /// were pushed, and forgets them.
    pub(super) fn hold<D: Dialect>(&mut self, held: &mut Pending) -> Result<(), StorageError> {
        if self.values.is_empty() {
            return Ok(());
        }
        let values = std::mem::take(&mut self.values);
        let ints: Vec<bool> = values[..self.width]
            .iter()
            .map(|v| matches!(v, Value::Int(_)))
            .collect();
        let rows: Vec<Vec<serde_json::Value>> = values
            .chunks(self.width)
            .map(|row| {
                row.iter()
                    .map(|v| match v {
                        Value::Text(t) => t.as_deref().into(),
                        Value::Int(i) => (*i).into(),
                    })
                    .collect()
            })
            .collect();
        held.push(
            statement(self.head, self.tail, D::JSON_ROWS, &ints),
            vec![dialect::json(&rows)?.into()],
        );
        Ok(())
    }
}

/// `head SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM source WHERE true tail`, for
/// columns that are integers where `ints` says so. (`WHERE true` tells SQLite's parser an
/// `ON CONFLICT` in `tail` belongs to the insert.)
fn statement(head: &str, tail: &str, source: &str, ints: &[bool]) -> String {
    let mut sql = format!("{head} SELECT ");
    for (i, int) in ints.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        if *int {
            sql.push_str(&format!("CAST(value ->> {i} AS BIGINT)"));
        } else {
            sql.push_str(&format!("value ->> {i}"));
        }
    }
    sql.push_str(&format!(" FROM {source} WHERE true"));
    if !tail.is_empty() {
        sql.push(' ');
        sql.push_str(tail);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_from_the_json_rows_by_position_and_kind() {
        assert_eq!(
            statement(
                "INSERT INTO t (a, b)",
                "ON CONFLICT DO NOTHING",
                "json_each($1)",
                &[false, true]
            ),
            "INSERT INTO t (a, b) SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) \
             FROM json_each($1) WHERE true ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            statement("INSERT INTO t (a)", "", "json_each($1)", &[false]),
            "INSERT INTO t (a) SELECT value ->> 0 FROM json_each($1) WHERE true"
        );
    }
}
