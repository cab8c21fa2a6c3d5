//! Time on the server's clock: the workers of one database, on machines
//! whose clocks disagree, still agree on when a lease expires.
//!
//! A lease is written with its end on the claimant's clock, and another
//! worker takes it over once its own clock passes that end. Were each
//! worker on its machine's clock, a machine a minute ahead would take over
//! every lease as soon as it was made. So a store opened with
//! [`PgStore::open`](crate::PgStore::open) reads time as its machine's
//! clock plus the difference to the server's clock, measured when it
//! connects (the middle of the quickest of three round trips). All
//! workers then share the server's time, to within a few milliseconds of
//! network delay, whatever their own clocks say; `settle` windows, which
//! compare change times written by one worker with another's clock, too.
//! Job queues on PostgreSQL use the server's `now()` to the same end; the
//! store keeps time on the client so that tests can move a manual clock
//! ([`PgStore::open_with_clock`](crate::PgStore::open_with_clock)).

use crate::conn::{Conn, PgResult};
use rederive_runtime::clock::{Clock, SystemClock};
use std::sync::atomic::{AtomicI64, Ordering};

/// The system clock, moved by the difference to the server's clock.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    offset_ms: AtomicI64,
}

impl ServerClock {
    /// The difference to the server's clock, in milliseconds (the server
    /// minus this machine).
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Measures the difference to the server's clock again.
    pub(crate) fn measure(&self, c: &mut Conn) -> PgResult<()> {
        let offset = offset(|| {
            let row = c.query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )?;
            Ok(row.try_get(0)?)
        })?;
        self.offset_ms.store(offset, Ordering::SeqCst);
        Ok(())
    }
}

impl Clock for ServerClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms())
    }
}

/// How many round trips a measure takes: the quickest one counts. Few,
/// since every open pays them, and leases last seconds: an error of half a
/// round trip does not matter.
const SAMPLES: usize = 3;

/// The server's clock minus this machine's, from `server_ms` (the server's
/// time in milliseconds, one round trip each): each sample sets the
/// server's answer against the middle of its round trip, and the sample
/// with the shortest round trip, whose middle is the least uncertain, wins.
fn offset(mut server_ms: impl FnMut() -> PgResult<i64>) -> PgResult<i64> {
    let mut best: Option<(i64, i64)> = None;
    for _ in 0..SAMPLES {
        let before = SystemClock.now_ms();
        let server = server_ms()?;
        let after = SystemClock.now_ms();
        let round_trip = after - before;
        let offset = server - (before + round_trip / 2);
        if best.is_none_or(|(rt, _)| round_trip < rt) {
            best = Some((round_trip, offset));
        }
    }
    Ok(best.map_or(0, |(_, offset)| offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_servers_clock_minus_ours() {
        for skew in [-90_000, -1, 0, 1, 3_600_000] {
            let measured = offset(|| Ok(SystemClock.now_ms() + skew)).unwrap();
            assert!((measured - skew).abs() <= 2, "{skew}: {measured}");
        }
    }

    #[test]
    fn the_quickest_round_trip_wins() {
        // The first answers are slow and late; the last is quick.
        let mut n = 0;
        let measured = offset(|| {
            n += 1;
            if n < SAMPLES {
                std::thread::sleep(std::time::Duration::from_millis(30));
                Ok(SystemClock.now_ms() + 10_000)
            } else {
                Ok(SystemClock.now_ms() + 5_000)
            }
        })
        .unwrap();
        assert!((measured - 5_000).abs() <= 3, "{measured}");
    }
}
