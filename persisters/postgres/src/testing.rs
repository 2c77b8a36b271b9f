//! For tests: a fresh database on the test server.

use std::sync::atomic::{AtomicU32, Ordering};

/// The connection string of a new, empty database on the server named by
/// `TEST_POSTGRES_URL` (`bash .ci/test` starts a throwaway server and sets
/// it). Panics when it is not set: the tests that call this must not pass
/// without a server.
pub fn fresh_database() -> String {
    let base = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set: run the tests with `bash .ci/test`, \
             which starts a throwaway PostgreSQL"
        )
    });
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "civkit_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let (admin, db) = (base.clone(), name.clone());
    // The synchronous client runs its own runtime: not on an async thread.
    let created = std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)?;
        c.batch_execute(&format!("CREATE DATABASE {db}"))
    })
    .join();
    match created {
        Ok(Ok(())) => format!("{base} dbname={name}"),
        Ok(Err(e)) => panic!("cannot create a test database: {e}"),
        Err(_) => panic!("creating a test database panicked"),
    }
}

/// A new database with the schema of `version` and none later, as a node
/// of that version left it: for testing the migrations after it.
pub fn database_at_schema(version: usize) -> String {
    let url = fresh_database();
    let conn = url.clone();
    let done = std::thread::spawn(move || -> civkit_framework::Result<()> {
        let mut c = postgres::Client::connect(&conn, postgres::NoTls).map_err(crate::db_err)?;
        crate::schema::migrate_to(&mut c, version).map(drop)
    })
    .join();
    match done {
        Ok(Ok(())) => url,
        Ok(Err(e)) => panic!("cannot set up schema {version}: {e}"),
        Err(_) => panic!("setting up a schema panicked"),
    }
}
