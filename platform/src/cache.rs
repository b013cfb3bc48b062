//! Read-through caching in Redis, shared by every replica, with versioned
//! invalidation.
//!
//! An entry names the *versions* it depends on (values in Redis, such as
//! "any article" or "the article with this slug"). It is stored together
//! with the values those versions had when its loader began, and is good
//! only while they still have them: one `MGET` reads the entry and the
//! versions together, so a hit costs one round trip. A writer bumps the
//! versions its change touched *after* its commit ([`Cache::invalidate`]);
//! a loader that read the database before that commit had read the versions
//! before the bump too, so what it stores is stale on arrival and never
//! served. Deleting entries instead would race: a loader that read the old
//! rows could store them after the delete.
//!
//! Versions are random values, not counters from zero: a bump sets a new
//! one, and a version key that expired or was evicted comes back as a
//! different number, so entries stored under an earlier value cannot match
//! it by chance.
//!
//! Concurrent misses of one key in a process load it once: the others wait
//! for it, then read what it stored (or, if a version moved meanwhile, load
//! it themselves, side by side). Redis being unreachable makes every read a
//! load from the source, never an error: a read that fails (or waits 250
//! ms) pauses the cache for 5 s, so an outage costs one slow read per pause.
//! TTLs bound memory and the life of an entry whose invalidation was lost (a process dying between its commit
//! and its bump; the events that also invalidate cover that case where a
//! service wires them).
//!
//! Metrics: `cache_requests_total{cache, result}` with result `hit`, `miss`
//! or `error` (Redis failed; the source answered).

use std::{
    collections::HashMap,
    future::{Future, IntoFuture},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use redis::aio::ConnectionManager;
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::metrics;

/// How long a version key lives after its last bump. A version a read
/// started lives as long as the entry stored under it, so reads of things
/// nobody changes (a slug that does not exist) leave nothing behind for
/// long. Either may lapse: it comes back as a new random value, which only
/// turns its entries into misses.
const VERSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// After Redis fails a read, reads skip the cache this long: a Redis that is
/// down or unreachable costs one slow call per pause, not one per read.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long a bump may take: it runs after the commit, off the request's
/// cancellation, and a lost one leaves entries stale until their TTL.
const BUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read waits on Redis before it asks the source instead: a
/// Redis that is down or reconnecting must not make reads slow.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Redis did not answer (in time).
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("Redis gave no answer within {0:?}")]
    Timeout(Duration),
}

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Unavailable> {
    tokio::time::timeout(REDIS_TIMEOUT, call)
        .await
        .map_err(|_| Unavailable::Timeout(REDIS_TIMEOUT))?
        .map_err(Unavailable::from)
}

/// What one `MGET` found: each key's value in the order asked, `None`
/// where a key is unset.
pub type Found = Vec<Option<Vec<u8>>>;

/// A version entries depend on, named without the cache's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub String);

impl Version {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

/// A bump under way ([`Cache::start_invalidation`]); awaiting it (or any
/// clone) waits for its end.
#[derive(Clone)]
pub struct Invalidation(Shared<BoxFuture<'static, ()>>);

impl Invalidation {
    /// Whether `self` and `other` await the same bump.
    pub fn is_shared_with(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0)
    }
}

impl IntoFuture for Invalidation {
    type Output = ();
    type IntoFuture = Shared<BoxFuture<'static, ()>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    /// Every key starts with it: `{prefix}v:{version}`, `{prefix}e:{entry}`.
    prefix: String,
    ttl: Duration,
    /// One gate per key being loaded in this process.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Reads skip the cache until this many milliseconds after `born`.
    paused_until: AtomicU64,
    born: Instant,
}

/// What one read of Redis found.
struct Lookup<T> {
    hit: Option<T>,
    /// The versions now, in the order asked; `None` when a key is unset.
    versions: Vec<Option<i64>>,
}

impl<T: DeserializeOwned> Lookup<T> {
    /// From the values of an entry's key and then its versions' keys.
    fn from_found(mut found: Found) -> Self {
        let stored = if found.is_empty() {
            None
        } else {
            found.remove(0)
        };
        let versions: Vec<Option<i64>> = found
            .iter()
            .map(|v| v.as_deref().and_then(parse_version))
            .collect();
        let hit = match (&stored, versions.iter().all(Option::is_some)) {
            (Some(bytes), true) => decode(bytes, &versions),
            _ => None,
        };
        Self { hit, versions }
    }
}

impl Cache {
    /// Entries live at most `ttl`; a zero `ttl` turns the cache off: every
    /// read is a load and nothing is stored or bumped.
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                prefix: prefix.into(),
                ttl,
                flights: Mutex::new(HashMap::new()),
                paused_until: AtomicU64::new(0),
                born: Instant::now(),
            }),
        }
    }

    fn paused(&self) -> bool {
        self.millis() < self.inner.paused_until.load(Ordering::Relaxed)
    }

    fn pause(&self) {
        let until = self.millis() + PAUSE_AFTER_FAILURE.as_millis() as u64;
        self.inner.paused_until.store(until, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        self.inner.born.elapsed().as_millis() as u64
    }

    fn off(&self) -> bool {
        self.inner.ttl.is_zero()
    }

    /// Whether a read of cache `name` goes straight to the source: the
    /// cache is off, or paused after a failure (counted as an error).
    fn skipped(&self, name: &'static str) -> bool {
        if self.off() {
            return true;
        }
        if self.paused() {
            count(name, "error");
            return true;
        }
        false
    }

    /// The entry `key` of cache `name` (a metric label), or what `load`
    /// returns, stored for the next reader unless it is an error. `load`
    /// must read only what the `depends_on` versions cover.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        name: &'static str,
        key: &str,
        depends_on: &[Version],
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if self.skipped(name) {
            return load().await;
        }
        let entry = self.entry_key(key);
        let lookup = match self.lookup::<T>(&entry, depends_on).await {
            Ok(lookup) => lookup,
            Err(e) => {
                self.unreachable(name, &e);
                return load().await;
            }
        };
        self.resolve(name, entry, depends_on, lookup, load).await
    }

    /// The keys [`Self::get_or_load_found`] needs read for `key`: a caller
    /// that makes a round trip to Redis anyway reads them along with its
    /// own, and a hit then costs no round trip of its own. Empty when the
    /// cache is off.
    pub fn keys_for(&self, key: &str, depends_on: &[Version]) -> Vec<String> {
        if self.off() {
            return Vec::new();
        }
        self.lookup_keys(&self.entry_key(key), depends_on)
    }

    /// An entry's key, then its versions' keys.
    fn lookup_keys(&self, entry: &str, depends_on: &[Version]) -> Vec<String> {
        let mut keys = Vec::with_capacity(depends_on.len() + 1);
        keys.push(entry.to_owned());
        keys.extend(depends_on.iter().map(|v| self.version_key(v)));
        keys
    }

    /// [`Self::get_or_load`], with Redis already read: `found` holds the
    /// values of [`Self::keys_for`]'s keys in their order, or `None` when
    /// the read that was to fetch them failed.
    pub async fn get_or_load_found<T, E, F, Fut>(
        &self,
        name: &'static str,
        key: &str,
        depends_on: &[Version],
        found: Option<Found>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if self.skipped(name) {
            return load().await;
        }
        let Some(found) = found.filter(|values| values.len() == depends_on.len() + 1) else {
            self.unreachable(name, &"the read it came along with failed");
            return load().await;
        };
        let lookup = Lookup::from_found(found);
        self.resolve(name, self.entry_key(key), depends_on, lookup, load)
            .await
    }

    /// Redis failed a read: reads skip the cache for a while, and this one
    /// is answered from the source.
    fn unreachable(&self, name: &'static str, error: &dyn std::fmt::Display) {
        count(name, "error");
        self.pause();
        tracing::warn!(cache = name, error = %error, "cache unreachable; reading the source for a while");
    }

    /// What a lookup found, answered: a hit as it is, a miss loaded once
    /// per process however many ask for it at once.
    async fn resolve<T, E, F, Fut>(
        &self,
        name: &'static str,
        entry: String,
        depends_on: &[Version],
        lookup: Lookup<T>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = lookup.hit {
            count(name, "hit");
            return Ok(value);
        }
        let mut gate = self.gate(&entry);
        let versions = match gate.try_lock() {
            Ok(()) => lookup.versions,
            // Another task of this process is loading it: wait, then take
            // what it stored, or load if the source changed meanwhile,
            // without holding the others up (its answer may be older than
            // a change a waiter must see).
            Err(()) => {
                gate.wait().await;
                match self.lookup::<T>(&entry, depends_on).await {
                    Ok(Lookup {
                        hit: Some(value), ..
                    }) => {
                        count(name, "hit");
                        return Ok(value);
                    }
                    Ok(Lookup { versions, .. }) => versions,
                    Err(_) => {
                        count(name, "error");
                        return load().await;
                    }
                }
            }
        };
        count(name, "miss");
        let versions = self.loaded_versions(versions, depends_on).await;
        self.load_and_store(&entry, versions, load).await
    }

    /// Several entries of cache `name` in one round trip: each `(key,
    /// depends_on)` of `entries` is answered from Redis or by one call of
    /// `load`, which gets the positions of the misses and returns their
    /// values in that order (`None`: nothing to store, nothing to answer).
    /// Concurrent misses are not shared here, unlike [`Self::get_or_load`]:
    /// one page's misses are loaded together in a single statement.
    pub async fn get_many_or_load<T, E, F, Fut>(
        &self,
        name: &'static str,
        entries: &[(String, Vec<Version>)],
        load: F,
    ) -> Result<Vec<Option<T>>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<T>>, E>>,
    {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if self.off() || self.paused() {
            if !self.off() {
                count_n(name, "error", entries.len());
            }
            return load((0..entries.len()).collect()).await;
        }
        let mut versions: Vec<&Version> = entries.iter().flat_map(|(_, deps)| deps).collect();
        versions.sort();
        versions.dedup();
        let mut keys: Vec<String> = entries.iter().map(|(key, _)| self.entry_key(key)).collect();
        keys.extend(versions.iter().map(|v| self.version_key(v)));
        let mut redis = self.inner.redis.clone();
        let found: Result<Found, _> =
            bounded(redis::cmd("MGET").arg(&keys).query_async(&mut redis)).await;
        let Ok(mut found) = found else {
            count_n(name, "error", entries.len());
            self.pause();
            return load((0..entries.len()).collect()).await;
        };
        let current: Vec<Option<i64>> = found
            .split_off(entries.len())
            .iter()
            .map(|v| v.as_deref().and_then(parse_version))
            .collect();
        let current = self
            .loaded_versions(
                current,
                &versions.iter().map(|v| (*v).clone()).collect::<Vec<_>>(),
            )
            .await;
        let versions_of = |deps: &[Version]| -> Option<Vec<i64>> {
            let current = current.as_ref()?;
            deps.iter()
                .map(|dep| versions.binary_search(&dep).ok().map(|i| current[i]))
                .collect()
        };
        let mut answers: Vec<Option<T>> = Vec::with_capacity(entries.len());
        let mut misses = Vec::new();
        for (i, ((_, deps), stored)) in entries.iter().zip(found).enumerate() {
            let hit = match (stored, versions_of(deps)) {
                (Some(bytes), Some(now)) => {
                    decode(&bytes, &now.into_iter().map(Some).collect::<Vec<_>>())
                }
                _ => None,
            };
            if hit.is_none() {
                misses.push(i);
            }
            answers.push(hit);
        }
        count_n(name, "hit", entries.len() - misses.len());
        count_n(name, "miss", misses.len());
        if misses.is_empty() {
            return Ok(answers);
        }
        let loaded = load(misses.clone()).await?;
        let mut pipe = redis::pipe();
        for (&i, value) in misses.iter().zip(loaded) {
            let (key, deps) = &entries[i];
            if let (Some(value), Some(now)) = (&value, versions_of(deps)) {
                match encode(value, &now) {
                    Ok(bytes) => {
                        pipe.cmd("SET")
                            .arg(self.entry_key(key))
                            .arg(bytes)
                            .arg("EX")
                            .arg(self.inner.ttl.as_secs())
                            .ignore();
                    }
                    Err(e) => tracing::warn!(error = %e, "could not encode a cache entry"),
                }
            }
            answers[i] = value;
        }
        if let Err(e) = bounded(pipe.query_async::<()>(&mut redis)).await {
            tracing::warn!(error = %e, "could not store cache entries");
        }
        Ok(answers)
    }

    /// Makes every entry that depends on one of `versions` stale. Call it
    /// after the commit of the change; it completes even if the caller is
    /// cancelled meanwhile (a client that gave up after the commit; the
    /// outbox relay, which stops waiting after 50 ms): the bump is its own
    /// task, started on the first poll.
    /// Failures are logged, not returned: the change is made, and entries
    /// expire within their TTL.
    pub async fn invalidate(&self, versions: &[Version]) {
        self.start_invalidation(versions.to_vec()).await;
    }

    /// [`Self::invalidate`] started now, as one task whose end every clone
    /// of the answer awaits: a batch of writes bumps what all of them made
    /// stale in one round trip, and answers each of its requests once that
    /// one bump is done.
    pub fn start_invalidation(&self, mut versions: Vec<Version>) -> Invalidation {
        versions.sort_unstable();
        versions.dedup();
        if versions.is_empty() || self.off() {
            return Invalidation(futures::future::ready(()).boxed().shared());
        }
        let cache = self.clone();
        let bump = tokio::spawn(async move { cache.bump(&versions).await });
        Invalidation(
            async move {
                if let Err(e) = bump.await {
                    tracing::warn!(error = %e, "cache invalidation did not run");
                }
            }
            .boxed()
            .shared(),
        )
    }

    async fn bump(&self, versions: &[Version]) {
        let mut pipe = redis::pipe();
        for version in versions {
            // A new random value rather than an increment: entries match
            // their versions by equality, so any value they were not stored
            // under makes them stale, and one SET does the work of
            // SET NX, INCR and EXPIRE.
            pipe.cmd("SET")
                .arg(self.version_key(version))
                .arg(random_version())
                .arg("EX")
                .arg(VERSION_TTL.as_secs())
                .ignore();
        }
        let mut redis = self.inner.redis.clone();
        let bumped = tokio::time::timeout(BUMP_TIMEOUT, pipe.query_async::<()>(&mut redis)).await;
        match bumped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, ?versions, "cache invalidation failed; entries expire by TTL");
            }
            Err(_) => {
                tracing::warn!(
                    ?versions,
                    "cache invalidation timed out; entries expire by TTL"
                );
            }
        }
    }

    async fn lookup<T: DeserializeOwned>(
        &self,
        entry: &str,
        depends_on: &[Version],
    ) -> Result<Lookup<T>, Unavailable> {
        let keys = self.lookup_keys(entry, depends_on);
        let mut redis = self.inner.redis.clone();
        let found = bounded(redis::cmd("MGET").arg(&keys).query_async(&mut redis)).await?;
        Ok(Lookup::from_found(found))
    }

    /// The versions a load is stored under; unset ones are started first,
    /// so the entry can be checked against them. `None` when Redis fails:
    /// the load is then not stored.
    async fn loaded_versions(
        &self,
        mut versions: Vec<Option<i64>>,
        depends_on: &[Version],
    ) -> Option<Vec<i64>> {
        let unset: Vec<usize> = (0..versions.len())
            .filter(|&i| versions[i].is_none())
            .collect();
        if !unset.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &unset {
                let key = self.version_key(&depends_on[i]);
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(random_version())
                    .arg("NX")
                    .arg("EX")
                    .arg(self.inner.ttl.as_secs())
                    .ignore()
                    .cmd("GET")
                    .arg(&key);
            }
            let mut redis = self.inner.redis.clone();
            let started: Found = bounded(pipe.query_async(&mut redis)).await.ok()?;
            for (&i, value) in unset.iter().zip(started) {
                versions[i] = value.as_deref().and_then(parse_version);
            }
        }
        versions.into_iter().collect()
    }

    async fn load_and_store<T, E, F, Fut>(
        &self,
        entry: &str,
        versions: Option<Vec<i64>>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let value = load().await?;
        if let Some(versions) = versions {
            match encode(&value, &versions) {
                Ok(bytes) => {
                    let mut redis = self.inner.redis.clone();
                    let stored: Result<(), _> = bounded(
                        redis::cmd("SET")
                            .arg(entry)
                            .arg(bytes)
                            .arg("EX")
                            .arg(self.inner.ttl.as_secs())
                            .query_async(&mut redis),
                    )
                    .await;
                    if let Err(e) = stored {
                        tracing::warn!(error = %e, "could not store a cache entry");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not encode a cache entry"),
            }
        }
        Ok(value)
    }

    /// This process's gate for loading `entry`; dropping it (and what it
    /// locked) lets the next one in, and the last one out removes it.
    fn gate(&self, entry: &str) -> Gate {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        let lock = flights.entry(entry.to_owned()).or_default().clone();
        Gate {
            inner: self.inner.clone(),
            entry: entry.to_owned(),
            lock,
            held: None,
        }
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}e:{key}", self.inner.prefix)
    }

    fn version_key(&self, version: &Version) -> String {
        format!("{}v:{}", self.inner.prefix, version.0)
    }

    /// Keys being loaded right now in this process (for tests).
    #[doc(hidden)]
    pub fn loads_in_flight(&self) -> usize {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// One task's place in the queue to load an entry. Dropped on every path,
/// a cancelled request's included, so the map never keeps a dead gate.
struct Gate {
    inner: Arc<Inner>,
    entry: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Gate {
    /// Enters at once when nobody is loading; `Err` when someone is.
    fn try_lock(&mut self) -> Result<(), ()> {
        let guard = self.lock.clone().try_lock_owned().map_err(|_| ())?;
        self.held = Some(guard);
        Ok(())
    }

    /// Until whoever loads now is done.
    async fn wait(&mut self) {
        drop(self.lock.lock().await);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.held = None;
        let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and this one: nobody else is waiting.
        if Arc::strong_count(&self.lock) <= 2 {
            flights.remove(&self.entry);
        }
    }
}

fn count(cache: &str, result: &str) {
    count_n(cache, result, 1);
}

fn count_n(cache: &str, result: &str, n: usize) {
    if n > 0 {
        metrics::get()
            .cache_requests
            .with_label_values(&[cache, result])
            .inc_by(n as u64);
    }
}

/// 52 random bits: a value no earlier life of a version key is likely to
/// have had (one chance in 2^52 per pair).
fn random_version() -> i64 {
    (Uuid::new_v4().as_u128() >> 76) as i64
}

fn parse_version(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `v1,v2,...\n` then the value as JSON.
fn encode<T: Serialize>(value: &T, versions: &[i64]) -> serde_json::Result<Vec<u8>> {
    let mut bytes = versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    bytes.push(b'\n');
    serde_json::to_writer(&mut bytes, value)?;
    Ok(bytes)
}

/// The value, if it was stored under exactly `versions`.
fn decode<T: DeserializeOwned>(bytes: &[u8], versions: &[Option<i64>]) -> Option<T> {
    let split = bytes.iter().position(|&b| b == b'\n')?;
    let (head, body) = (&bytes[..split], &bytes[split + 1..]);
    let stored = std::str::from_utf8(head).ok()?;
    let current = versions
        .iter()
        .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",");
    if stored != current {
        return None;
    }
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_only_under_the_versions_it_was_stored_with() {
        let bytes = encode(&vec!["a".to_owned()], &[7, 9]).unwrap();
        assert_eq!(
            decode::<Vec<String>>(&bytes, &[Some(7), Some(9)]),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(decode::<Vec<String>>(&bytes, &[Some(7), Some(10)]), None);
        assert_eq!(decode::<Vec<String>>(&bytes, &[Some(79)]), None);
        assert_eq!(decode::<Vec<String>>(&bytes, &[Some(7), None]), None);
    }

    #[test]
    fn versions_are_52_random_bits() {
        let drawn: std::collections::HashSet<i64> = (0..1000).map(|_| random_version()).collect();
        assert_eq!(drawn.len(), 1000, "no value drawn twice");
        assert!(drawn.iter().all(|v| (0..1 << 52).contains(v)));
    }
}
