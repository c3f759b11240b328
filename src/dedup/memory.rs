//! `store = "memory"`: the embedded default, for one process. A sharded map from a 128-bit digest of
//! `(source, id)` to its state (16 bytes per id whatever the id's length, where the whole key took about
//! 330 bytes at its peak), with a bound on the number of ids. Past the bound the oldest delivered ids
//! are forgotten first; an in-flight id never is (a claim that finds only in-flight ids fails, and
//! `on_store_error` decides). Expired ids are purged in the background, oldest first, at no cost per
//! request. Time is tokio's, so that tests can run it on a paused clock.

use std::collections::{HashMap, VecDeque, hash_map};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Found, StoreError, Token};

const SHARDS: usize = 16;
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// Milliseconds since the store's epoch: an id's end of lease or of TTL.
type Millis = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    InFlight { token: Token, until: Millis },
    Done { until: Millis },
}

/// An [`Entry`] in 16 bytes, as the map holds it: its end, and its claim's token (0 once done: no token is
/// ever 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    until: Millis,
    token: u64,
}

impl From<Entry> for Packed {
    fn from(entry: Entry) -> Self {
        match entry {
            Entry::InFlight { token, until } => Packed { until, token: token.0 },
            Entry::Done { until } => Packed { until, token: 0 },
        }
    }
}

impl From<Packed> for Entry {
    fn from(packed: Packed) -> Self {
        match packed.token {
            0 => Entry::Done { until: packed.until },
            token => Entry::InFlight {
                token: Token(token),
                until: packed.until,
            },
        }
    }
}

/// An id's digest: two independently seeded 64-bit hashes of the exact key. Keys come from verified
/// events only and the seeds are random per process, so nobody can aim for a collision, and by chance one
/// is about 1 in 10^29 among 10^5 ids.
pub(crate) type Digest = [u64; 2];

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Digest, Packed, foldhash::fast::RandomState>,
    /// Done ids in commit order, which is also expiry order since the TTL is the same for all. An item
    /// whose entry has changed since is stale and skipped.
    done: VecDeque<(Digest, Millis)>,
}

impl Shard {
    fn get(&self, key: &Digest) -> Option<Entry> {
        self.map.get(key).map(|p| Entry::from(*p))
    }

    /// Removes `key` if it is still the done id that `done` recorded (one lookup); true when it was.
    fn remove_done(&mut self, key: Digest, until: Millis) -> bool {
        match self.map.entry(key) {
            hash_map::Entry::Occupied(slot) if Entry::from(*slot.get()) == (Entry::Done { until }) => {
                slot.remove();
                true
            }
            _ => false,
        }
    }

    /// Removes the oldest done id; false when there is none.
    fn evict_oldest_done(&mut self) -> bool {
        while let Some((key, until)) = self.done.pop_front() {
            if self.remove_done(key, until) {
                return true;
            }
        }
        false
    }

    fn purge(&mut self, now: Millis) {
        while let Some(&(key, until)) = self.done.front() {
            if until > now {
                break;
            }
            self.remove_done(key, until);
            self.done.pop_front();
        }
    }
}

#[derive(Debug)]
/// Event ids in this process's memory, bounded by `max_entries`.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hashers: [foldhash::fast::RandomState; 2],
    /// What [`Millis`] count from.
    epoch: Instant,
}

impl MemoryStore {
    /// A store of at most about `max_keys` ids, with its purge task when a runtime is running.
    pub fn start(max_keys: usize) -> Arc<Self> {
        let store = Arc::new(Self::new(max_keys));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(purge_loop(Arc::downgrade(&store)));
        }
        store
    }

    fn new(max_keys: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hashers: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// The digest of `(source, id)`: the source, a NUL byte (never part of a name) and the id, hashed in
    /// place (no key is built). A claim keeps it, so that its commit or release does not hash again.
    pub(crate) fn digest(&self, source: &str, id: &str) -> Digest {
        self.hashers.each_ref().map(|seed| {
            let mut hasher = seed.build_hasher();
            hasher.write(source.as_bytes());
            hasher.write_u8(0);
            hasher.write(id.as_bytes());
            hasher.finish()
        })
    }

    /// `at`, in milliseconds since the epoch.
    fn millis(&self, at: Instant) -> Millis {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The shard of `digest`, locked.
    fn shard(&self, digest: Digest) -> std::sync::MutexGuard<'_, Shard> {
        let index = (digest[0] as usize) % SHARDS;
        // A panic while holding a shard lock cannot leave an entry half-written (every update is one
        // insert or remove), so a poisoned lock is still consistent.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn claim(&self, key: Digest, token: Token, lease: Duration) -> Result<Found, StoreError> {
        let now = self.millis(Instant::now());
        let until = now.saturating_add(crate::redis_client::millis(lease));
        let entry = Packed::from(Entry::InFlight { token, until });
        let mut shard = self.shard(key);
        if let Some(slot) = shard.map.get_mut(&key) {
            match Entry::from(*slot) {
                Entry::Done { until } if until > now => return Ok(Found::Duplicate),
                Entry::InFlight { until, .. } if until > now => {
                    return Ok(Found::InFlight(Some(Duration::from_millis(until - now))));
                }
                // Expired: free to claim.
                _ => {
                    *slot = entry;
                    return Ok(Found::Claimed);
                }
            }
        }
        if shard.map.len() >= self.per_shard && !shard.evict_oldest_done() {
            return Err(StoreError::Full);
        }
        shard.map.insert(key, entry);
        Ok(Found::Claimed)
    }

    /// Marks the id done for `ttl`, whoever holds it now: the event was delivered. `true` when the claim
    /// was still ours.
    pub(crate) fn commit(&self, key: Digest, token: Token, ttl: Duration) -> bool {
        let until = self
            .millis(Instant::now())
            .saturating_add(crate::redis_client::millis(ttl));
        let done = Packed::from(Entry::Done { until });
        let mut shard = self.shard(key);
        let ours = match shard.map.get_mut(&key) {
            Some(slot) => {
                let ours = matches!(Entry::from(*slot), Entry::InFlight { token: t, .. } if t == token);
                *slot = done;
                ours
            }
            None => {
                // A key that is gone (its lease ran out and it was purged) comes back only within the bound.
                if shard.map.len() >= self.per_shard && !shard.evict_oldest_done() {
                    return false;
                }
                shard.map.insert(key, done);
                false
            }
        };
        shard.done.push_back((key, until));
        ours
    }

    pub(crate) fn release(&self, key: Digest, token: Token) -> bool {
        let mut shard = self.shard(key);
        if matches!(shard.get(&key), Some(Entry::InFlight { token: t, .. }) if t == token) {
            shard.map.remove(&key);
            true
        } else {
            false
        }
    }

    /// Removes every done id whose TTL has run out.
    pub fn purge(&self) {
        let now = self.millis(Instant::now());
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(PoisonError::into_inner).purge(now);
        }
    }

    /// Ids held now, done and in flight.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// True when no id is claimed or committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn purge_loop(store: Weak<MemoryStore>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        store.purge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(3600);

    /// The digest of `id` of the source "src".
    fn key(store: &MemoryStore, id: &str) -> Digest {
        store.digest("src", id)
    }

    fn claimed(store: &MemoryStore, id: &str) -> Token {
        let token = Token::new();
        assert_eq!(store.claim(key(store, id), token, LEASE), Ok(Found::Claimed));
        token
    }

    fn claim(store: &MemoryStore, id: &str) -> Result<Found, StoreError> {
        store.claim(key(store, id), Token::new(), LEASE)
    }

    #[tokio::test(start_paused = true)]
    async fn claim_commit_then_duplicate_until_the_ttl_runs_out() {
        let store = MemoryStore::start(1000);
        let token = claimed(&store, "k");
        assert!(matches!(claim(&store, "k"), Ok(Found::InFlight(Some(_)))));
        assert!(store.commit(key(&store, "k"), token, TTL));
        assert_eq!(claim(&store, "k"), Ok(Found::Duplicate));

        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(claim(&store, "k"), Ok(Found::Duplicate));
        tokio::time::advance(Duration::from_secs(2)).await;
        // The background purge has run on the paused clock: the id is gone, not just expired.
        tokio::task::yield_now().await;
        assert_eq!(store.len(), 0);
        claimed(&store, "k");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_id_can_be_claimed_again() {
        let store = MemoryStore::start(1000);
        let token = claimed(&store, "k");
        assert!(store.release(key(&store, "k"), token));
        claimed(&store, "k");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_lets_a_new_claim_through_and_a_late_commit_still_marks_the_event_done() {
        let store = MemoryStore::start(1000);
        let stale = claimed(&store, "k");
        tokio::time::advance(LEASE + Duration::from_millis(1)).await;
        let fresh = claimed(&store, "k");
        assert!(!store.release(key(&store, "k"), stale), "a stale token cannot release");
        assert!(matches!(claim(&store, "k"), Ok(Found::InFlight(_))));
        // The stale holder delivered the event all the same: it is done, and the fresh holder's release
        // cannot undo that.
        assert!(
            !store.commit(key(&store, "k"), stale, TTL),
            "the commit says the lease was lost"
        );
        assert_eq!(claim(&store, "k"), Ok(Found::Duplicate));
        assert!(!store.release(key(&store, "k"), fresh));
        assert_eq!(claim(&store, "k"), Ok(Found::Duplicate));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_holds_under_ten_times_more_ids_and_keeps_the_newest() {
        let cap = 1_600;
        let store = MemoryStore::start(cap);
        for i in 0..cap * 10 {
            let key = format!("id-{i}");
            let token = claimed(&store, &key);
            assert!(store.commit(self::key(&store, &key), token, TTL));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(store.len() <= cap, "{} ids held, cap {cap}", store.len());
        assert!(
            store.len() >= cap * 9 / 10,
            "eviction is one id at a time: {}",
            store.len()
        );
        let newest = format!("id-{}", cap * 10 - 1);
        assert_eq!(claim(&store, &newest), Ok(Found::Duplicate));
        assert_eq!(claim(&store, "id-0"), Ok(Found::Claimed), "the oldest was evicted");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_ids_are_never_evicted() {
        let store = MemoryStore::start(SHARDS);
        // One id per shard at most: fill with in-flight ids until a claim fails.
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..200 {
            let id = format!("busy-{i}");
            match claim(&store, &id) {
                Ok(Found::Claimed) => held.push(id),
                Err(StoreError::Full) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(refused > 0);
        for id in &held {
            assert!(matches!(claim(&store, id), Ok(Found::InFlight(_))));
        }
    }

    #[test]
    fn the_source_and_the_id_are_hashed_apart() {
        let store = MemoryStore::new(10);
        assert_ne!(store.digest("ab", "c"), store.digest("a", "bc"));
        assert_ne!(store.digest("a", "b"), store.digest("b", "a"));
        assert_eq!(store.digest("a", "b"), store.digest("a", "b"));
    }
}
