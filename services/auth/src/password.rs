//! Password hashing with argon2id at OWASP's parameters. Hashing is CPU-bound
//! (tens of milliseconds), so it runs on the blocking pool, and a semaphore
//! bounds how many run at once: a login flood queues here instead of
//! starving every other request of threads and memory.
//!
//! Each hash needs 19 MiB of working memory. Left to the argon2 crate, every
//! hash allocates its own, and after a burst the allocator keeps the peak
//! (auth held ~450 MB after a registration burst). Here a hash borrows a
//! buffer from [`HashMemory`]: at most one per permit exists, a burst reuses
//! them, and they are freed as soon as nobody waits for one.

use quill_platform::config::Secret;
use secrecy::ExposeSecret;
use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use tokio::sync::Semaphore;

use crate::error::AuthError;

/// OWASP Password Storage Cheat Sheet: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

#[derive(Clone)]
pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    memory: Arc<HashMemory>,
    /// Verified against when an email is unknown, so the response time does
    /// not reveal which emails have accounts.
    decoy_hash: Arc<str>,
}

fn internal<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> AuthError + '_ {
    move |e| AuthError::Internal(format!("{what}: {e}"))
}

/// A fresh argon2id PHC string for `password` with `params`, computed in
/// `memory`.
fn hash_in(params: &Params, memory: &mut [Block], password: &[u8]) -> Result<String, AuthError> {
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, memory)
        .map_err(internal("hashing password"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(internal("encoding parameters"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(internal("encoding hash"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash`, computed in `memory`
/// when `hash` was made with today's parameters (older parameters get
/// memory of their own size). The comparison is constant-time.
fn verify_in(memory: &mut [Block], password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let block_count = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let computed = if block_count == memory.len() {
        argon2.hash_password_into_with_memory(password, salt, &mut out, memory)
    } else {
        argon2.hash_password_into(password, salt, &mut out)
    };
    computed.is_ok() && Output::new(&out).is_ok_and(|out| out == *expected)
}

/// Working memory for hashes, reused while callers queue for a permit and
/// freed when none does: bounded by the permits, returned after a burst.
struct HashMemory {
    /// Today's parameters: every buffer is their block count.
    params: Params,
    pooled: Mutex<Vec<Box<[Block]>>>,
    /// Callers waiting for a permit or hashing now.
    demand: AtomicUsize,
    /// Buffers in existence (pooled or in use), for tests and the bound.
    live: AtomicUsize,
    /// The most buffers that ever existed at once.
    peak: AtomicUsize,
}

impl HashMemory {
    fn new(params: Params) -> Self {
        Self {
            params,
            pooled: Mutex::new(Vec::new()),
            demand: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> Box<[Block]> {
        if let Some(blocks) = self.lock().pop() {
            return blocks;
        }
        let live = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(live, Ordering::SeqCst);
        vec![Block::default(); self.params.block_count()].into_boxed_slice()
    }

    /// Keeps `blocks` for a caller still in line, or frees it (and whatever
    /// a caller who gave up left pooled) when this was the last.
    fn give_back(&self, blocks: Box<[Block]>) {
        let mut pooled = self.lock();
        if self.demand.load(Ordering::SeqCst) > 0 {
            pooled.push(blocks);
        } else {
            let freed = pooled.len() + 1;
            pooled.clear();
            drop(blocks);
            self.live.fetch_sub(freed, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<[Block]>>> {
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts one caller in [`HashMemory::demand`] until dropped, cancellation
/// included.
struct Demand(Arc<HashMemory>);

impl Demand {
    fn new(memory: &Arc<HashMemory>) -> Self {
        memory.demand.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(memory))
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        self.0.demand.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordHasherPool {
    pub fn new(max_concurrent: usize) -> Result<Self, AuthError> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
            .map_err(|e| AuthError::Internal(format!("argon2 parameters: {e}")))?;
        let memory = Arc::new(HashMemory::new(params));
        let mut blocks = memory.take();
        let decoy = hash_in(
            &memory.params,
            &mut blocks,
            b"decoy password for unknown accounts",
        );
        memory.give_back(blocks);
        Ok(Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            memory,
            decoy_hash: decoy?.into(),
        })
    }

    pub async fn hash(&self, password: Secret) -> Result<String, AuthError> {
        self.run(move |params, memory| hash_in(params, memory, password.expose_secret().as_bytes()))
            .await?
    }

    /// True when `password` matches `hash`; `None` checks the decoy and is
    /// always false.
    pub async fn verify(&self, password: Secret, hash: Option<String>) -> Result<bool, AuthError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy_hash.to_string());
        let matches = self
            .run(move |_, memory| verify_in(memory, password.expose_secret().as_bytes(), &hash))
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Params, &mut [Block]) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let demand = Demand::new(&self.memory);
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal("hasher closed".into()))?;
        let memory = Arc::clone(&self.memory);
        // The permit goes with the work: a caller that hangs up mid-hash
        // frees neither its permit nor its buffer before the hash ends.
        tokio::task::spawn_blocking(move || {
            let mut blocks = memory.take();
            let result = work(&memory.params, &mut blocks);
            // This caller is done: only others in line may keep the buffer.
            drop(demand);
            memory.give_back(blocks);
            drop(permit);
            result
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_reuses_at_most_one_buffer_per_permit_and_frees_them_after() {
        let pool = PasswordHasherPool::new(2).unwrap();
        let hash = pool.hash("burst".into()).await.unwrap();
        let logins: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                let hash = hash.clone();
                tokio::spawn(async move { pool.verify("burst".into(), Some(hash)).await })
            })
            .collect();
        for login in logins {
            assert!(login.await.unwrap().unwrap());
        }
        assert!(pool.memory.peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(
            pool.memory.live.load(Ordering::SeqCst),
            0,
            "freed after the burst"
        );
        assert!(pool.memory.lock().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_hangs_up_keeps_its_permit_until_its_hash_ends() {
        let pool = PasswordHasherPool::new(1).unwrap();
        let abandoned = tokio::spawn({
            let pool = pool.clone();
            async move { pool.hash("abandoned".into()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        abandoned.abort();
        pool.hash("next".into()).await.unwrap();
        assert_eq!(
            pool.memory.peak.load(Ordering::SeqCst),
            1,
            "one buffer per permit"
        );
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let pool = PasswordHasherPool::new(1).unwrap();
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let older = argon2::PasswordHasher::hash_password(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            b"older account",
        )
        .unwrap()
        .to_string();
        assert!(
            pool.verify("older account".into(), Some(older.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong".into(), Some(older)).await.unwrap());
        assert!(
            !pool
                .verify("x".into(), Some("not a phc string".into()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let pool = PasswordHasherPool::new(2).unwrap();
        let hash = pool.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pool.verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(
            !pool
                .verify("decoy password for unknown accounts".into(), None)
                .await
                .unwrap()
        );
    }
}
