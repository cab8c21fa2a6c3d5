//! Hints of writes for watch mode: every write transaction that takes a
//! revision sends `NOTIFY` on one channel as it commits (in the same round
//! trip as its `COMMIT`, and only if it commits), and a listener on its own
//! connection passes each notification on.
//!
//! A hint is only a hint. Connection poolers in transaction mode drop
//! `LISTEN`, a listening connection can break, and a hint arrives for every
//! writer, this reader's own writes included: the change token stays the
//! truth, and watch mode still polls it.

use crate::conn::{invalid, storage};
use crate::{connect, PgConnector};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use rederive_runtime::error::Result;
use rederive_runtime::storage::Subscription;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The channel's name (channels are per database in PostgreSQL).
macro_rules! channel {
    () => {
        "rederive_changes"
    };
}

/// The channel.
const CHANNEL: &str = channel!();

/// What a write transaction that took a revision sends to commit.
pub(crate) const NOTIFY_AND_COMMIT: &str = concat!("NOTIFY ", channel!(), "; COMMIT");

/// How long the listener waits for a notification before it looks at its
/// stop flag again.
const TICK: Duration = Duration::from_millis(100);

/// How long the listener waits before it connects again after losing its
/// connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// A new connection listening on [`CHANNEL`].
fn listening(connector: &PgConnector) -> Result<Client> {
    let mut client = connect(&connector.config, &connector.tls, &connector.location)?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| storage(e, Some(format!("cannot LISTEN on {}", connector.location))))?;
    Ok(client)
}

/// Listens on its own connection (the first `LISTEN` is in place when this
/// returns) and calls `wake` for each notification until the subscription
/// is dropped. A lost connection is opened again, and `wake` called once
/// then, since a write may have gone unheard meanwhile.
pub(crate) fn subscribe(
    connector: &PgConnector,
    wake: Arc<dyn Fn() + Send + Sync>,
) -> Result<Subscription> {
    let first = listening(connector)?;
    let connector = connector.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("rederive-listen".into())
        .spawn(move || listen(first, &connector, &*wake, &flag))
        .map_err(|e| invalid(format!("cannot start the listener thread: {e}")))?;
    Ok(Subscription::new(stop, thread))
}

fn listen(first: Client, connector: &PgConnector, wake: &dyn Fn(), stop: &AtomicBool) {
    let mut client = Some(first);
    let mut lost_at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            if lost_at.elapsed() < RECONNECT {
                std::thread::sleep(TICK);
                continue;
            }
            match listening(connector) {
                Ok(c) => {
                    client = Some(c);
                    wake();
                }
                Err(_) => lost_at = Instant::now(),
            }
            continue;
        };
        let broken = {
            let mut notifications = c.notifications();
            let mut iter = notifications.timeout_iter(TICK);
            loop {
                match iter.next() {
                    Ok(Some(_)) => {
                        wake();
                        if stop.load(Ordering::SeqCst) {
                            break false;
                        }
                    }
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            }
        };
        if broken || c.is_closed() {
            client = None;
            lost_at = Instant::now();
        }
    }
}
