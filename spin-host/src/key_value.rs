//! Spin's `key-value` interface (`spin:key-value/key-value@3.0.0`): the store labelled `default`,
//! kept in a real `SQLite` file in the table Spin's own local store uses, and refusing what Spin's
//! hosted store would refuse, so tests can prove the component stays within those limits.

use std::path::Path;
use std::sync::MutexGuard;

use rusqlite::OptionalExtension as _;
use wasmtime::component::{Accessor, FutureReader, HasSelf, Resource, StreamReader};

use crate::spin::key_value::key_value::{Error, Host, HostStore, HostStoreWithStore};
use crate::sqlite::Database;
use crate::Host as StoreData;

/// The longest key the hosted store takes, in bytes.
///
/// Spin's two hosted platforms (Fermyon Cloud, and Fermyon Wasm Functions on Akamai) limit keys
/// and values; these are the stricter of the two: Fermyon Cloud's key of at most 255 bytes, and
/// a value of at most 1 MB (both hosts' figure), read as 10^6 bytes, as the edge's own check
/// (`src/core/kv.rs`) reads it, so a component within them runs on either. Spin's local store has
/// no limits, hence this host's own.
pub const MAX_KEY_BYTES: usize = 255;
/// The largest value the hosted store takes, in bytes (see [`MAX_KEY_BYTES`]).
pub const MAX_VALUE_BYTES: usize = 1_000_000;

/// The one label this host grants, and the `store` column of its rows.
const STORE: &str = "default";

/// An open store, as the guest sees it: every one is the `default` store.
pub struct Store;

/// Opens `file` (created if missing) with the table Spin's local key-value store uses.
pub fn open(file: &Path) -> wasmtime::Result<Database> {
    let db = crate::sqlite::open(file, None)?;
    create_table(&db.lock().expect("nothing else holds the new connection"))?;
    Ok(db)
}

fn create_table(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
         value BLOB NOT NULL, PRIMARY KEY (store, key))",
    )
}

/// Spin opens only the stores a component is granted; this host grants `default` when it has a
/// file for it (`--key-value`).
fn check_label(label: &str, granted: bool) -> Result<(), Error> {
    match (label == STORE, granted) {
        (false, _) => Err(Error::NoSuchStore),
        (true, false) => Err(Error::AccessDenied),
        (true, true) => Ok(()),
    }
}

/// The connection behind an open store (a store is only opened when there is one).
fn connection(host: &StoreData) -> Result<MutexGuard<'_, rusqlite::Connection>, Error> {
    let db = host.key_value.as_ref().ok_or(Error::AccessDenied)?;
    db.lock().map_err(|_| Error::Other("the key-value database lock is poisoned".into()))
}

/// The value under `key`, if there is one.
fn get(db: &rusqlite::Connection, key: &str) -> Result<Option<Vec<u8>>, Error> {
    db.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")
        .and_then(|mut statement| statement.query_row((STORE, key), |row| row.get(0)).optional())
        .map_err(other)
}

/// Puts `value` under `key`, replacing any value there; refuses (writing nothing) a key or value
/// over the hosted store's limits.
fn set(db: &rusqlite::Connection, key: &str, value: &[u8]) -> Result<(), Error> {
    within_limits(key, value)?;
    db.prepare_cached(
        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut statement| statement.execute((STORE, key, value)))
    .map_err(other)?;
    Ok(())
}

/// A key or value over the hosted store's limits is `other`, naming the limit.
fn within_limits(key: &str, value: &[u8]) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Other(format!(
            "key of {} bytes refused: the hosted key-value store takes keys of at most {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::Other(format!(
            "value of {} bytes refused: the hosted key-value store takes values of at most {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Removes `key`; removing a key that is not there is not an error.
fn delete(db: &rusqlite::Connection, key: &str) -> Result<(), Error> {
    db.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
        .and_then(|mut statement| statement.execute((STORE, key)))
        .map_err(other)?;
    Ok(())
}

/// Whether there is a value under `key`.
fn exists(db: &rusqlite::Connection, key: &str) -> Result<bool, Error> {
    db.prepare_cached("SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)")
        .and_then(|mut statement| statement.query_row((STORE, key), |row| row.get(0)))
        .map_err(other)
}

/// Every key in the store.
fn keys(db: &rusqlite::Connection) -> Result<Vec<String>, Error> {
    db.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")
        .and_then(|mut statement| statement.query_map([STORE], |row| row.get(0))?.collect())
        .map_err(other)
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(other)`
fn other(error: rusqlite::Error) -> Error {
    Error::Other(error.to_string())
}

impl Host for StoreData {}

impl HostStore for StoreData {
    fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

type Keys = (StreamReader<String>, FutureReader<Result<(), Error>>);

impl<T> HostStoreWithStore<T> for HasSelf<StoreData> {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Store>, Error>> {
        accessor.with(|mut access| {
            let host = access.get();
            if let Err(error) = check_label(&label, host.key_value.is_some()) {
                return Ok(Err(error));
            }
            Ok(Ok(host.table.push(Store)?))
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        _: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(accessor.with(|mut access| get(&*connection(access.get())?, &key)))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        _: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(accessor.with(|mut access| set(&*connection(access.get())?, &key, &value)))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        _: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(accessor.with(|mut access| delete(&*connection(access.get())?, &key)))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        _: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(accessor.with(|mut access| exists(&*connection(access.get())?, &key)))
    }

    /// The keys are read at once and handed to the guest as a finished stream, followed by the
    /// listing's result (an empty stream and the error if it failed).
    async fn get_keys(accessor: &Accessor<T, Self>, _: Resource<Store>) -> wasmtime::Result<Keys> {
        accessor.with(|mut access| {
            let (keys, result) = match connection(access.get()).and_then(|db| keys(&db)) {
                Ok(keys) => (keys, Ok(())),
                Err(error) => (Vec::new(), Err(error)),
            };
            Ok((
                StreamReader::new(&mut access, keys)?,
                FutureReader::new(&mut access, async { wasmtime::error::Ok(result) })?,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        create_table(&db).expect("the table");
        db
    }

    fn refused(result: Result<(), Error>) -> bool {
        matches!(result, Err(Error::Other(message)) if message.contains("refused"))
    }

    #[test]
    fn get_after_set_returns_the_value_and_a_second_set_replaces_it() {
        let db = store();
        assert_eq!(get(&db, "k").ok(), Some(None));
        set(&db, "k", b"one").expect("set");
        assert_eq!(get(&db, "k").ok(), Some(Some(b"one".to_vec())));
        set(&db, "k", b"two").expect("set again");
        assert_eq!(get(&db, "k").ok(), Some(Some(b"two".to_vec())));
    }

    #[test]
    fn delete_removes_the_key_and_deleting_a_missing_key_is_fine() {
        let db = store();
        set(&db, "k", b"v").expect("set");
        assert_eq!(exists(&db, "k").ok(), Some(true));
        delete(&db, "k").expect("delete");
        assert_eq!(exists(&db, "k").ok(), Some(false));
        assert_eq!(get(&db, "k").ok(), Some(None));
        delete(&db, "k").expect("delete again");
    }

    #[test]
    fn keys_lists_the_default_stores_keys_only() {
        let db = store();
        set(&db, "b", b"2").expect("set");
        set(&db, "a", b"1").expect("set");
        db.execute("INSERT INTO spin_key_value (store, key, value) VALUES ('other', 'c', x'00')", [])
            .expect("a row of another store");
        assert_eq!(keys(&db).ok(), Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn a_key_over_255_bytes_is_refused_and_writes_nothing() {
        let db = store();
        let longest = "k".repeat(MAX_KEY_BYTES);
        set(&db, &longest, b"v").expect("a key of exactly the limit");
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(refused(set(&db, &too_long, b"v")));
        assert_eq!(keys(&db).ok(), Some(vec![longest]));
    }

    #[test]
    fn a_value_over_1_mib_is_refused_and_keeps_the_old_value() {
        let db = store();
        set(&db, "k", &vec![0; MAX_VALUE_BYTES]).expect("a value of exactly the limit");
        set(&db, "k", b"old").expect("set");
        assert!(refused(set(&db, "k", &vec![0; MAX_VALUE_BYTES + 1])));
        assert!(refused(set(&db, "new", &vec![0; MAX_VALUE_BYTES + 1])));
        assert_eq!(get(&db, "k").ok(), Some(Some(b"old".to_vec())));
        assert_eq!(exists(&db, "new").ok(), Some(false));
    }

    #[test]
    fn only_default_opens_and_only_when_granted() {
        assert!(check_label("default", true).is_ok());
        assert!(matches!(check_label("default", false), Err(Error::AccessDenied)));
        assert!(matches!(check_label("other", true), Err(Error::NoSuchStore)));
        assert!(matches!(check_label("other", false), Err(Error::NoSuchStore)));
    }
}
