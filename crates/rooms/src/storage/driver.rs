//! What the shared SQL needs of a sqlx driver: running statements, binding the values it
//! writes, reading the columns it reads. sqlx provides each for SQLite and for PostgreSQL,
//! under bounds on the value types (`i64: Encode<'_, D>`, ...). Rust carries a trait's
//! supertraits over to whoever names the trait, but not bounds on other types; so each
//! capability is a trait of the database here, implemented for every database that meets
//! sqlx's bounds, and [`Dialect`](super::Dialect) names them all as its supertraits. Generic
//! code then needs only `D: Dialect`, and uses `.arg(v)` and `row.col(name)` where plain
//! sqlx code would write `.bind(v)` and `row.try_get(name)`.

use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Pool, Row, Type};

/// Runs statements on a connection or a pool of `Self`.
pub trait Runs: Database {
    fn on(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
    fn pooled(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;
}

impl<D: Database> Runs for D
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
{
    fn on(conn: &mut D::Connection) -> impl Executor<'_, Database = D> {
        conn
    }

    fn pooled(pool: &Pool<D>) -> impl Executor<'_, Database = D> {
        pool
    }
}

/// Binds values of type `T` to statements of `Self`.
pub trait Binds<T>: Database {
    fn bind(query: Query<'_, Self, Self::Arguments>, value: T) -> Query<'_, Self, Self::Arguments>;
}

impl<'t, D: Database, T: Encode<'t, D> + Type<D>> Binds<T> for D {
    fn bind(query: Query<'_, D, D::Arguments>, value: T) -> Query<'_, D, D::Arguments> {
        query.bind(value)
    }
}

/// Reads columns of `Self`'s rows as `T`, by name.
pub trait Reads<T>: Database {
    fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<D: Database, T> Reads<T> for D
where
    T: for<'r> Decode<'r, D> + Type<D>,
    for<'c> &'c str: ColumnIndex<D::Row>,
{
    fn read(row: &D::Row, column: &str) -> Result<T, sqlx::Error> {
        row.try_get(column)
    }
}

/// `.arg(value)`: binds the next `$N` of a statement.
pub trait Arg<D> {
    fn arg<T>(self, value: T) -> Self
    where
        D: Binds<T>;
}

impl<D: Database> Arg<D> for Query<'_, D, D::Arguments> {
    fn arg<T>(self, value: T) -> Self
    where
        D: Binds<T>,
    {
        <D as Binds<T>>::bind(self, value)
    }
}

/// `row.col(name)`: a column of a row, decoded.
pub trait Col: Row {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        Self::Database: Reads<T>;
}

impl<R: Row> Col for R {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        R::Database: Reads<T>,
    {
        <R::Database as Reads<T>>::read(self, name)
    }
}
