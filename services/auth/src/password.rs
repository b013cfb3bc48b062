//! Password hashing with argon2id at OWASP's parameters. Hashing is CPU-bound
//! (tens of milliseconds), so it runs on the blocking pool, and a semaphore
//! bounds how many run at once: a login flood queues here instead of
//! starving every other request of threads and memory.

use quill_platform::config::Secret;
use secrecy::ExposeSecret;
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::AuthError;

/// OWASP Password Storage Cheat Sheet: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

#[derive(Clone)]
pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    /// Verified against when an email is unknown, so the response time does
    /// not reveal which emails have accounts.
    decoy_hash: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl PasswordHasherPool {
    pub fn new(max_concurrent: usize) -> Result<Self, AuthError> {
        let decoy = argon2()
            .hash_password(b"decoy password for unknown accounts")
            .map_err(|e| AuthError::Internal(format!("hashing decoy: {e}")))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            decoy_hash: decoy.to_string().into(),
        })
    }

    pub async fn hash(&self, password: Secret) -> Result<String, AuthError> {
        self.run(move || {
            argon2()
                .hash_password(password.expose_secret().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Internal(format!("hashing password: {e}")))
        })
        .await?
    }

    /// True when `password` matches `hash`; `None` checks the decoy and is
    /// always false.
    pub async fn verify(&self, password: Secret, hash: Option<String>) -> Result<bool, AuthError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy_hash.to_string());
        let matches = self
            .run(move || {
                argon2()
                    .verify_password(password.expose_secret().as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Internal("hasher closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
