//! The inline read connections behind [`Store::read`](super::Store::read):
//! one per thread and store, read-only, never waiting; counted, so that
//! the store can be closed only once they are.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// How much of the file the inline readers map (the address space, not memory).
const READER_MMAP_BYTES: i64 = 1 << 30;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The read connection of [`Readers::read_now`] on this thread.
    static READER: RefCell<Option<Reader>> = const { RefCell::new(None) };
}

/// The file behind a store, an id telling stores apart in one process
/// (tests run many servers, each with its own file), and how many threads
/// hold an inline reader on it.
pub(super) struct Readers {
    id: u64,
    path: PathBuf,
    open: AtomicUsize,
}

/// One thread's read connection, with the id of the store it reads.
struct Reader {
    // Fields drop in order: the connection is closed before it leaves the count.
    conn: Connection,
    store_id: u64,
    _counted: Counted,
}

/// A place in [`Readers::open`], given back when dropped.
struct Counted(Arc<Readers>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Readers {
    pub(super) fn new(path: &Path) -> Arc<Readers> {
        Arc::new(Readers {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_owned(),
            open: AtomicUsize::new(0),
        })
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// How many threads hold an inline reader on this store's file.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Runs a read on this thread's own read-only connection, inline: no
    /// thread hop, no pool.
    ///
    /// Safe to run on an async worker because it cannot wait: in WAL mode a
    /// reader does not wait for writers (it reads the last committed state,
    /// so a logout that has answered is seen), and the connection has no
    /// busy timeout, so the rare SQLITE_BUSY comes back at once as an error,
    /// which [`Store::read`](super::Store::read) answers through the pool.
    pub(super) fn read_now<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        READER.with(|cell| {
            let mut reader = cell.borrow_mut();
            let current = matches!(&*reader, Some(r) if r.store_id == self.id);
            if !current {
                *reader = None;
                let conn = open_reader(&self.path).map_err(StoreError::from)?;
                self.open.fetch_add(1, Ordering::AcqRel);
                *reader = Some(Reader {
                    conn,
                    store_id: self.id,
                    _counted: Counted(Arc::clone(self)),
                });
            }
            let Some(Reader { conn, .. }) = &*reader else {
                return Err(StoreError::Task("no read connection".to_owned()));
            };
            let result = f(conn);
            // A reader must never keep a transaction open between calls: it
            // would go on reading an old snapshot (a revoked token would
            // still pass). Should one have failed to end, drop the connection.
            if !conn.is_autocommit() {
                *reader = None;
            }
            result
        })
    }
}

/// Closes the inline reader of one store on the thread that drops it.
///
/// Each HTTP worker holds one, so that a worker that stops closes its
/// reader on its own thread: the thread may live on until the process
/// exits (actix's arbiters do), and its thread-local with it. A reader left
/// open would keep SQLite from removing the `-wal` and `-shm` files.
#[derive(Clone)]
pub struct ReaderCloser(pub(super) Option<Arc<Readers>>);

impl Drop for ReaderCloser {
    fn drop(&mut self) {
        let Some(readers) = &self.0 else {
            return;
        };
        // Not during the thread's own teardown, nor from inside a read.
        let _ = READER.try_with(|cell| {
            if let Ok(mut reader) = cell.try_borrow_mut() {
                if reader.as_ref().is_some_and(|r| r.store_id == readers.id) {
                    *reader = None;
                }
            }
        });
    }
}

/// A read-only connection with no busy timeout (it must never wait).
fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // rusqlite opens every connection with a 5 s busy timeout: take it off.
    conn.busy_timeout(Duration::ZERO)?;
    // Read pages straight from the OS page cache, without a read() syscall
    // and a copy into SQLite's own cache per page: with a million sessions
    // most lookups miss the 2 MB page cache (measured in docs/benchmarks.md).
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use crate::store::db::DbExt;
    use std::sync::mpsc;

    use super::super::{test_store, test_user, Store};
    use super::*;

    /// A thread that reads `store` inline, then lets go of it (and, if
    /// `close_reader`, drops a closer, as a stopping HTTP worker does), and
    /// lives on until the returned sender is used or dropped.
    fn worker(
        store: &Store,
        close_reader: bool,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (store, closer) = (store.clone(), store.reader_closer());
        let (ready_tx, ready) = mpsc::channel();
        let (exit, exit_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let users: i64 = store
                .read_now(|c| c.one("SELECT count(*) FROM users", &[], |r| r.int(0)))
                .unwrap();
            assert_eq!(users, 1);
            drop(store);
            if close_reader {
                drop(closer);
            }
            ready_tx.send(()).unwrap();
            let _ = exit_rx.recv();
        });
        ready.recv().unwrap();
        (exit, thread)
    }

    #[tokio::test]
    async fn closing_the_store_after_its_readers_removes_the_wal_and_shm_files() {
        let (dir, store) = test_store();
        test_user(&store.connection().unwrap(), "alice");
        let (exit, thread) = worker(&store, true);
        let (wal, shm) = (
            dir.path().join("test.db-wal"),
            dir.path().join("test.db-shm"),
        );
        assert!(wal.exists() && shm.exists());
        assert_eq!(store.readers().open(), 0, "the closer closed the reader");

        assert!(store.close(Duration::from_secs(5)).await.unwrap());
        assert!(!wal.exists() && !shm.exists(), "-wal or -shm left behind");
        drop(exit);
        thread.join().unwrap();
        // The data is in the file itself.
        let conn = Connection::open(dir.path().join("test.db")).unwrap();
        let users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(users, 1);
    }

    #[tokio::test]
    async fn a_reader_still_open_is_waited_for_only_so_long_and_reported() {
        let (_dir, store) = test_store();
        test_user(&store.connection().unwrap(), "alice");
        let (exit, thread) = worker(&store, false);
        assert_eq!(store.readers().open(), 1);
        let started = std::time::Instant::now();
        assert!(!store.close(Duration::from_millis(100)).await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(exit);
        thread.join().unwrap();
    }
}
