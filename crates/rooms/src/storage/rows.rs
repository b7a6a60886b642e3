//! Many rows in one statement: `INSERT INTO t (...) VALUES (...), (...), ...`, written once
//! for both databases. A write batch's audit rows, events and participants go in a few
//! statements instead of one each: on a busy machine every statement is a round trip to
//! the database that the whole batch, and every notice held for it, waits behind.

use super::StorageError;
use super::dialect::Dialect;
use super::driver::Arg;
use sqlx::Transaction;

/// Most values bound to one statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_VALUES: usize = 8_192;

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

/// Rows for one table, inserted in as few statements as the bound-value limit allows.
pub(super) struct Rows {
    /// `INSERT INTO t (a, b, c)`.
    head: &'static str,
    /// What follows the values (`ON CONFLICT ...`), or nothing.
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

    /// Adds a row of exactly `width` values.
    pub(super) fn push<const N: usize>(&mut self, row: [Value; N]) {
        debug_assert_eq!(N, self.width);
        self.values.extend(row);
    }

    /// Inserts the rows pushed so far, in the order they were pushed, and forgets them.
    pub(super) async fn flush<D: Dialect>(
        &mut self,
        tx: &mut Transaction<'_, D>,
    ) -> Result<(), StorageError> {
        let per_statement = (MAX_VALUES / self.width).max(1) * self.width;
        let values = std::mem::take(&mut self.values);
        for chunk in values.chunks(per_statement) {
            let sql = statement(self.head, self.tail, self.width, chunk.len() / self.width);
            // Built from the fixed texts above and numbered placeholders: no value is in it.
            // Not kept prepared: the text varies with the number of rows, and would push the
            // statements that are always the same out of each connection's cache.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for value in chunk {
                query = match value {
                    Value::Text(v) => query.arg(v.clone()),
                    Value::Int(v) => query.arg(*v),
                };
            }
            query.execute(D::on(tx)).await?;
        }
        Ok(())
    }
}

/// `head VALUES ($1, $2), ($3, $4) tail` for `rows` rows of `width` values.
fn statement(head: &str, tail: &str, width: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        sql.push(')');
    }
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
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(
            statement("INSERT INTO t (a, b)", "ON CONFLICT DO NOTHING", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            statement("INSERT INTO t (a)", "", 1, 1),
            "INSERT INTO t (a) VALUES ($1)"
        );
    }
}
