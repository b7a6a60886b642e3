//! Writes a transaction holds back and sends together. Nothing in a write batch reads its
//! participants, visit updates, audit rows and chain heads back, so they can wait for the
//! batch's event numbering and go with it: on PostgreSQL in one statement (each a
//! data-modifying `WITH` part, [`Dialect::COMBINES_WRITES`]), on SQLite in turn. On a busy
//! machine every statement is a round trip to the database that the whole batch, and every
//! notice held for it, waits behind (BENCHMARKS.md, "Joins in cluster mode").

use super::StorageError;
use super::dialect::Dialect;
use super::driver::Arg;
use super::rows::Value;
use std::borrow::Cow;

/// Most values bound to one statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
pub(super) const MAX_VALUES: usize = 8_192;

/// A statement with `$1`, `$2`, ... and the values they stand for.
#[derive(Debug)]
struct Part {
    sql: Cow<'static, str>,
    values: Vec<Value>,
}

/// Statements held, in the order they are to run.
#[derive(Debug, Default)]
pub(super) struct Pending {
    parts: Vec<Part>,
}

impl Pending {
    /// Holds a statement that returns nothing the caller reads. It must not modify a row
    /// another held statement modifies: PostgreSQL runs them as parts of one statement,
    /// which sees one snapshot and may apply them in any order.
    pub(super) fn push(&mut self, sql: impl Into<Cow<'static, str>>, values: Vec<Value>) {
        self.parts.push(Part {
            sql: sql.into(),
            values,
        });
    }

    /// Runs what is held, in as few statements as the dialect allows.
    pub(super) async fn run<D: Dialect>(
        &mut self,
        conn: &mut D::Connection,
    ) -> Result<(), StorageError> {
        for (sql, values) in self.statements::<D>(None) {
            query::<D>(&sql, &values).execute(D::on(conn)).await?;
        }
        Ok(())
    }

    /// Runs what is held, then `last` (a statement that returns rows, under the same rule
    /// as [`Pending::push`]), in as few statements as the dialect allows; `last`'s rows.
    pub(super) async fn run_then_fetch<D: Dialect>(
        &mut self,
        conn: &mut D::Connection,
        last: &'static str,
        values: Vec<Value>,
    ) -> Result<Vec<D::Row>, StorageError> {
        let mut statements = self.statements::<D>(Some(Part {
            sql: last.into(),
            values,
        }));
        let Some((sql, values)) = statements.pop() else {
            return Ok(Vec::new());
        };
        for (sql, values) in statements {
            query::<D>(&sql, &values).execute(D::on(conn)).await?;
        }
        Ok(query::<D>(&sql, &values).fetch_all(D::on(conn)).await?)
    }

    /// The statements to send for what is held, then `last`, and their values; forgets
    /// what was held.
    fn statements<D: Dialect>(
        &mut self,
        last: Option<Part>,
    ) -> Vec<(Cow<'static, str>, Vec<Value>)> {
        let parts = std::mem::take(&mut self.parts).into_iter().chain(last);
        if !D::COMBINES_WRITES {
            return parts.map(|p| (p.sql, p.values)).collect();
        }
        let mut statements = Vec::new();
        let mut group: Vec<Part> = Vec::new();
        let mut bound = 0;
        for part in parts {
            if !group.is_empty() && bound + part.values.len() > MAX_VALUES {
                statements.push(combine(std::mem::take(&mut group)));
                bound = 0;
            }
            bound += part.values.len();
            group.push(part);
        }
        if !group.is_empty() {
            statements.push(combine(group));
        }
        statements
    }
}

/// One statement doing what `parts` do in turn: `WITH w0 AS (first), w1 AS (second) last`,
/// each part's placeholders numbered on from the values before it. A last part with a
/// `WITH` list of its own gets the others put at the head of that list.
fn combine(mut parts: Vec<Part>) -> (Cow<'static, str>, Vec<Value>) {
    let Some(last) = parts.pop() else {
        return (Cow::Borrowed(""), Vec::new());
    };
    if parts.is_empty() {
        return (last.sql, last.values);
    }
    let mut sql = String::from("WITH ");
    let mut values = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("w{i} AS ("));
        renumber(&mut sql, &part.sql, values.len());
        sql.push(')');
        values.extend(part.values);
    }
    match last.sql.strip_prefix("WITH ") {
        Some(list) => {
            sql.push_str(", ");
            renumber(&mut sql, list, values.len());
        }
        None => {
            sql.push(' ');
            renumber(&mut sql, &last.sql, values.len());
        }
    }
    values.extend(last.values);
    (Cow::Owned(sql), values)
}

/// Appends `sql` to `out` with each placeholder `$N` as `$(N + by)`. The statements held
/// here are this folder's own, with no `$` but in placeholders.
fn renumber(out: &mut String, sql: &str, by: usize) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// A statement built here, its values bound, kept prepared: a statement prepared afresh
/// costs PostgreSQL a round trip more. The texts held are fixed (rows are bound as one
/// JSON value, see `rows.rs`), so a batch is one of a handful of combinations of them.
fn query<'q, D: Dialect>(
    sql: &'q str,
    values: &'q [Value],
) -> sqlx::query::Query<'q, D, D::Arguments> {
    // Built from this folder's fixed texts and numbered placeholders: no value is in it.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = match value {
            Value::Text(v) => query.arg(v.as_deref()),
            Value::Int(v) => query.arg(*v),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(sql: &'static str, n: usize) -> Part {
        Part {
            sql: sql.into(),
            values: (0..n).map(|i| Value::Int(Some(i as i64))).collect(),
        }
    }

    #[test]
    fn parts_become_one_statement_with_placeholders_numbered_across_them() {
        let (sql, values) = combine(vec![
            part("INSERT INTO a (x, y) VALUES ($1, $2)", 2),
            part("UPDATE b SET x = $1", 1),
            part("INSERT INTO c (x) VALUES ($1), ($2) RETURNING x", 2),
        ]);
        assert_eq!(
            sql,
            "WITH w0 AS (INSERT INTO a (x, y) VALUES ($1, $2)), w1 AS (UPDATE b SET x = $3) \
             INSERT INTO c (x) VALUES ($4), ($5) RETURNING x"
        );
        assert_eq!(values.len(), 5);
    }

    #[test]
    fn a_last_part_with_its_own_with_list_gets_the_others_at_its_head() {
        let (sql, _) = combine(vec![
            part("UPDATE b SET x = $1", 1),
            part(
                "WITH t AS (INSERT INTO t VALUES ($1) RETURNING k) SELECT k FROM t WHERE k > $2",
                2,
            ),
        ]);
        assert_eq!(
            sql,
            "WITH w0 AS (UPDATE b SET x = $1), t AS (INSERT INTO t VALUES ($2) RETURNING k) \
             SELECT k FROM t WHERE k > $3"
        );
    }

    #[test]
    fn one_part_is_sent_as_it_is() {
        let (sql, values) = combine(vec![part("UPDATE b SET x = $1", 1)]);
        assert_eq!(sql, "UPDATE b SET x = $1");
        assert_eq!(values.len(), 1);
    }

    #[test]
    fn placeholders_past_nine_and_dollar_signs_without_digits_are_kept_straight() {
        let mut out = String::new();
        renumber(&mut out, "($9, $10, $11) $ x$", 10);
        assert_eq!(out, "($19, $20, $21) $ x$");
    }

    #[test]
    fn statements_are_split_where_they_would_bind_too_many_values() {
        let mut held = Pending::default();
        held.push(
            "INSERT INTO a VALUES ($1)",
            vec![Value::Int(Some(1)); MAX_VALUES - 1],
        );
        held.push("INSERT INTO b VALUES ($1)", vec![Value::Int(Some(1)); 2]);
        held.push("INSERT INTO c VALUES ($1)", vec![Value::Int(Some(1)); 3]);
        let statements = held.statements::<sqlx::Postgres>(None);
        assert_eq!(statements.len(), 2);
        assert!(statements.iter().all(|(_, v)| v.len() <= MAX_VALUES));
        assert!(statements[1].0.starts_with("WITH w0 AS (INSERT INTO b"));
        assert!(held.parts.is_empty(), "forgets what it sent");

        held.push("INSERT INTO a VALUES ($1)", vec![Value::Int(Some(1)); 1]);
        held.push("INSERT INTO b VALUES ($1)", vec![Value::Int(Some(1)); 1]);
        assert_eq!(
            held.statements::<sqlx::Sqlite>(None).len(),
            2,
            "SQLite runs each in turn"
        );
    }
}
