//! In-process lookup timing: what the SQLite part of a token check costs
//! without HTTP, through the server's own read path, for the 1k and the
//! large database. The report sets it beside the server CPU per request.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use latchkey::auth::token::TokenHash;
use latchkey::store::{sessions, Store};

use crate::report::median;
use crate::seed::{copy_database, remove_database};
use crate::Ctx;

/// Microseconds per token lookup through the server's own inline read path
/// (`Store::read` + `sessions::find_by_token_hash`), in this process,
/// for each (database, sampled tokens): the SQLite cost of a token check
/// without HTTP. Each database gets its own thread, so each keeps its read
/// connection as a server worker does; rounds alternate between them and
/// the median of five is kept, so drift of the machine's speed hits all alike.
pub fn lookup_costs(ctx: &Ctx, databases: &[(PathBuf, Vec<String>)]) -> Result<Vec<f64>> {
    const LOOKUPS: usize = 100_000;
    const ROUNDS: usize = 5;
    let mut copies = Vec::new();
    let mut workers = Vec::new();
    for (i, (db, tokens)) in databases.iter().enumerate() {
        let copy = ctx.work.join(format!("lookups-{i}.db"));
        copy_database(db, &copy)?;
        let store = Store::open(&copy, 1)?;
        copies.push(copy);
        let hashes: Vec<TokenHash> = tokens
            .iter()
            .filter_map(|t| TokenHash::of_token(t))
            .collect();
        if hashes.is_empty() {
            bail!("no sampled token for {}", db.display());
        }
        let (start, rounds) = mpsc::channel::<()>();
        let (report, timings) = mpsc::channel::<Result<f64>>();
        std::thread::spawn(move || {
            // `Store::read` is async; its inline path answers on the first
            // poll, so polling once with a no-op waker times exactly what a
            // worker does. A runtime context is entered only so that a
            // fallback to the pool (reported as an error) has one.
            let runtime = match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = report.send(Err(e.into()));
                    return;
                }
            };
            let _context = runtime.enter();
            let mut poll_context = Context::from_waker(Waker::noop());
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            for () in rounds {
                let started = Instant::now();
                let mut result = Ok(());
                for _ in 0..LOOKUPS {
                    // xorshift: a uniform pick among the sampled tokens.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let hash = hashes[(state % hashes.len() as u64) as usize];
                    let read = store.read(move |conn| sessions::find_by_token_hash(conn, &hash.0));
                    match pin!(read).poll(&mut poll_context) {
                        Poll::Ready(Ok(Some(_))) => {}
                        Poll::Ready(Ok(None)) => {
                            result = Err(anyhow!("a sampled token was not found"))
                        }
                        Poll::Ready(Err(e)) => result = Err(e.into()),
                        Poll::Pending => {
                            result = Err(anyhow!("an inline read fell back to the pool"))
                        }
                    }
                }
                let micros = started.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
                if report.send(result.map(|()| micros)).is_err() {
                    return;
                }
            }
        });
        workers.push((start, timings));
    }
    let mut timings = vec![Vec::new(); workers.len()];
    // Round 0 warms the caches and the mapping up.
    for round in 0..=ROUNDS {
        for (i, (start, report)) in workers.iter().enumerate() {
            start
                .send(())
                .map_err(|_| anyhow!("a lookup thread stopped"))?;
            let micros = report
                .recv()
                .map_err(|_| anyhow!("a lookup thread stopped"))??;
            if round > 0 {
                timings[i].push(micros);
            }
        }
    }
    drop(workers);
    for copy in &copies {
        remove_database(copy);
    }
    Ok(timings
        .into_iter()
        .map(|t| median(t).unwrap_or(f64::NAN))
        .collect())
}
