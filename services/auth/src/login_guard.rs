//! Brakes on guessing passwords and mass registration.
//!
//! Login counts failures, not attempts, so an owner who types the right
//! password is never counted against. Three budgets: per (account, client
//! address), tight, which is the guessing client's own; per client address
//! across accounts (spraying one password over many accounts); and per
//! account across clients, loose, for a guess spread over many addresses.
//! The last one never applies to a client that has signed in to the account
//! before (an address in its session list), so no stranger can keep the
//! owner out of their account by failing on purpose; it can only hold back
//! other new clients during an attack.

use quill_platform::rate_limit::{RateLimited, RateLimiter};
use sha2::{Digest, Sha256};

use crate::config::AuthLimits;

#[derive(Clone)]
pub struct LoginGuard {
    limiter: RateLimiter,
    limits: AuthLimits,
}

/// Who is trying: the account asked for and the client's address.
pub struct Attempt<'a> {
    pub email: &'a str,
    pub ip: &'a str,
}

impl Attempt<'_> {
    /// Keys carry a digest of the email, not the address itself.
    fn account(&self) -> String {
        let digest = Sha256::digest(self.email.trim().to_lowercase().as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn account_client(&self) -> String {
        format!("{}:{}", self.account(), self.ip)
    }
}

impl LoginGuard {
    pub fn new(limiter: RateLimiter, limits: AuthLimits) -> Self {
        Self { limiter, limits }
    }

    pub async fn admit_registration(&self, ip: &str) -> Result<(), RateLimited> {
        self.limiter
            .hit("register:ip", ip, self.limits.register_per_ip)
            .await
    }

    /// Whether the attempt may go ahead; `known_client` says whether the
    /// client signed in to this account before, asked only when the
    /// account's own budget is spent.
    pub async fn admit_login<F>(
        &self,
        attempt: &Attempt<'_>,
        known_client: F,
    ) -> Result<(), RateLimited>
    where
        F: AsyncFnOnce() -> bool,
    {
        let limits = &self.limits;
        self.limiter
            .check(
                "login-failures:account-client",
                &attempt.account_client(),
                limits.login_failures_per_client,
            )
            .await?;
        self.limiter
            .check(
                "login-failures:ip",
                attempt.ip,
                limits.login_failures_per_ip,
            )
            .await?;
        if let Err(limited) = self
            .limiter
            .check(
                "login-failures:account",
                &attempt.account(),
                limits.login_failures_per_account,
            )
            .await
            && !known_client().await
        {
            return Err(limited);
        }
        Ok(())
    }

    pub async fn failed(&self, attempt: &Attempt<'_>) {
        let window = self.limits.login_failures_per_client.window;
        self.limiter
            .record(
                "login-failures:account-client",
                &attempt.account_client(),
                window,
            )
            .await;
        self.limiter
            .record("login-failures:ip", attempt.ip, window)
            .await;
        self.limiter
            .record("login-failures:account", &attempt.account(), window)
            .await;
    }

    /// The client proved itself: its own earlier typos no longer count.
    pub async fn succeeded(&self, attempt: &Attempt<'_>) {
        self.limiter
            .reset("login-failures:account-client", &attempt.account_client())
            .await;
    }

    /// Wrong current passwords given to change the email or password: the
    /// same tight budget as a client's logins, per session, so a stolen
    /// access token cannot be used to guess the password.
    pub async fn admit_reauth(&self, session: &str) -> Result<(), RateLimited> {
        self.limiter
            .check(
                "reauth-failures:session",
                session,
                self.limits.login_failures_per_client,
            )
            .await
    }

    pub async fn reauth_failed(&self, session: &str) {
        self.limiter
            .record(
                "reauth-failures:session",
                session,
                self.limits.login_failures_per_client.window,
            )
            .await;
    }
}
