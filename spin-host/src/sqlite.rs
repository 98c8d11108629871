//! Spin's `sqlite` interface (`spin:sqlite/sqlite@3.1.0`) over one real database file, and the
//! migrations that initialise it from `d1-migrations/` the way `wrangler d1 migrations apply` does.
//! Without a file (no `--sqlite`) the database is not granted: opening it is `access-denied`.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::{Access, Accessor, FutureReader, HasSelf, Resource, StreamReader};
use wasmtime::error::Context as _;

use crate::spin::sqlite::sqlite::{
    Error, Host, HostConnection, HostConnectionWithStore, QueryResult, RowResult, Value,
};
use crate::Host as StoreData;

/// An open connection, as the guest sees it: every one is the same `default` database.
pub struct Connection;

/// The one database every instance shares.
pub type Database = Arc<Mutex<rusqlite::Connection>>;

/// Opens `file` and applies the migrations in `migrations` that it has not seen yet, in name
/// order, recording each in `d1_migrations` (the table wrangler uses for D1).
pub fn open(file: &Path, migrations: Option<&Path>) -> wasmtime::Result<Database> {
    let mut db = rusqlite::Connection::open(file).with_context(|| format!("opening {}", file.display()))?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL with `synchronous = NORMAL`: commits do not wait for fsync, as in local D1 (miniflare).
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    if let Some(dir) = migrations {
        migrate(&mut db, dir)?;
    }
    Ok(Arc::new(Mutex::new(db)))
}

fn migrate(db: &mut rusqlite::Connection, dir: &Path) -> wasmtime::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, \
         applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)",
    )?;
    let mut files: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading migrations from {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let applied: bool =
            db.query_row("SELECT EXISTS (SELECT 1 FROM d1_migrations WHERE name = ?1)", [&name], |row| {
                row.get(0)
            })?;
        if applied {
            continue;
        }
        let sql = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let tx = db.transaction()?;
        tx.execute_batch(&sql).with_context(|| format!("applying migration {name}"))?;
        tx.execute("INSERT INTO d1_migrations (name) VALUES (?1)", [&name])?;
        tx.commit()?;
    }
    Ok(())
}

/// Runs one statement and reads all of its rows.
fn execute(db: Option<&Database>, sql: &str, parameters: Vec<Value>) -> Result<QueryResult, Error> {
    let db = db.ok_or(Error::AccessDenied)?;
    let db = db.lock().map_err(|_| Error::Io("the database lock is poisoned".into()))?;
    let mut statement = db.prepare_cached(sql).map_err(io)?;
    let columns: Vec<String> = statement.column_names().map(String::from).collect();
    let parameters = parameters.into_iter().map(to_sql);
    let mut rows = statement.query(rusqlite::params_from_iter(parameters)).map_err(io)?;
    let mut results = Vec::new();
    while let Some(row) = rows.next().map_err(io)? {
        let values =
            (0..columns.len()).map(|i| row.get_ref(i).map(from_sql)).collect::<Result<_, _>>().map_err(io)?;
        results.push(RowResult { values });
    }
    Ok(QueryResult { columns, rows: results })
}

fn to_sql(value: Value) -> SqlValue {
    match value {
        Value::Integer(n) => SqlValue::Integer(n),
        Value::Real(x) => SqlValue::Real(x),
        Value::Text(text) => SqlValue::Text(text),
        Value::Blob(bytes) => SqlValue::Blob(bytes),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
        ValueRef::Null => Value::Null,
    }
}

/// The rowid of the last insert, 0 before any (or without a database).
fn last_insert_rowid(db: Option<&Database>) -> i64 {
    db.and_then(|db| db.lock().ok()).map_or(0, |db| db.last_insert_rowid())
}

/// The rows the last statement changed, 0 before any (or without a database).
fn changes(db: Option<&Database>) -> u64 {
    db.and_then(|db| db.lock().ok()).map_or(0, |db| db.changes())
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(io)`
fn io(error: rusqlite::Error) -> Error {
    Error::Io(error.to_string())
}

/// Spin opens only the databases a component is granted; this host grants `default` when it has
/// a file for it (`--sqlite`).
fn check_name(database: &str, granted: bool) -> Result<(), Error> {
    match (database == "default", granted) {
        (false, _) => Err(Error::NoSuchDatabase),
        (true, false) => Err(Error::AccessDenied),
        (true, true) => Ok(()),
    }
}

impl Host for StoreData {}

impl HostConnection for StoreData {
    fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        if let Err(error) = check_name(&database, self.db.is_some()) {
            return Ok(Err(error));
        }
        Ok(Ok(self.table.push(Connection)?))
    }

    fn execute(
        &mut self,
        _: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        Ok(execute(self.db.as_ref(), &statement, parameters))
    }

    fn last_insert_rowid(&mut self, _: Resource<Connection>) -> wasmtime::Result<i64> {
        Ok(last_insert_rowid(self.db.as_ref()))
    }

    fn changes(&mut self, _: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(changes(self.db.as_ref()))
    }

    fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

type Rows = (Vec<String>, StreamReader<RowResult>, FutureReader<Result<(), Error>>);

impl<T> HostConnectionWithStore<T> for HasSelf<StoreData> {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        accessor.with(|mut access| access.get().open(database))
    }

    /// The rows are read at once (the statements here return a handful) and handed to the guest
    /// as a finished stream, followed by the statement's result.
    async fn execute_async(
        accessor: &Accessor<T, Self>,
        _: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        accessor.with(|mut access: Access<'_, T, Self>| {
            let result = execute(access.get().db.as_ref(), &statement, parameters);
            Ok(match result {
                Ok(QueryResult { columns, rows }) => Ok((
                    columns,
                    StreamReader::new(&mut access, rows)?,
                    FutureReader::new(&mut access, async { wasmtime::error::Ok(Ok(())) })?,
                )),
                Err(error) => Err(error),
            })
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        _: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        Ok(accessor.with(|mut access| last_insert_rowid(access.get().db.as_ref())))
    }

    async fn changes_async(accessor: &Accessor<T, Self>, _: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(accessor.with(|mut access| changes(access.get().db.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_default_opens_and_only_when_granted() {
        assert!(check_name("default", true).is_ok());
        assert!(matches!(check_name("default", false), Err(Error::AccessDenied)));
        assert!(matches!(check_name("other", true), Err(Error::NoSuchDatabase)));
    }

    #[test]
    fn without_a_database_statements_are_denied() {
        assert!(matches!(execute(None, "SELECT 1", Vec::new()), Err(Error::AccessDenied)));
        assert_eq!(last_insert_rowid(None), 0);
    }
}
