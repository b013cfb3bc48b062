//! Brakes on guessing passwords and mass registration.
//!
//! Login counts failures, not attempts, so an owner who types the right
//! password is never counted against (each attempt reserves a failure
//! before the password is checked and a success gives it back, so
//! concurrent guesses cannot overrun a budget). Client addresses count as
//! IPv4 addresses or IPv6 /64s. Three budgets: per (account, client
//! address), tight, which is the guessing client's own; per client address
//! across accounts (spraying one password over many accounts); and per
//! account across clients, loose, for a guess spread over many addresses.
//! The last one never applies to a client that has signed in to the account
//! before (an address in its session list), so no stranger can keep the
//! owner out of their account by failing on purpose; it can only hold back
//! other new clients during an attack.

use std::net::IpAddr;

use quill_platform::rate_limit::{Limit, RateLimited, RateLimiter};
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

const ACCOUNT_CLIENT: &str = "login-failures:account-client";
const IP: &str = "login-failures:ip";
const ACCOUNT: &str = "login-failures:account";
const REAUTH: &str = "reauth-failures:session";

impl Attempt<'_> {
    /// Keys carry a digest of the email, not the address itself.
    fn account(&self) -> String {
        let digest = Sha256::digest(self.email.trim().to_lowercase().as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn client(&self) -> String {
        client_key(self.ip)
    }

    fn account_client(&self) -> String {
        format!("{}:{}", self.account(), self.client())
    }
}

/// The unit a limit counts per client address: an IPv4 address, or the /64
/// an IPv6 client holds (any one of which it can pick per request).
fn client_key(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

impl LoginGuard {
    pub fn new(limiter: RateLimiter, limits: AuthLimits) -> Self {
        Self { limiter, limits }
    }

    pub async fn admit_registration(&self, ip: &str) -> Result<(), RateLimited> {
        self.limiter
            .hit("register:ip", &client_key(ip), self.limits.register_per_ip)
            .await
    }

    /// Admits the attempt if every budget has room, reserving one failure in
    /// each before the password is checked (so concurrent guesses cannot all
    /// pass a budget that has one left); [`Self::succeeded`] gives them back.
    /// `known_client` says whether the client signed in to this account
    /// before, asked only when the account's own budget is spent.
    pub async fn admit_login<F>(
        &self,
        attempt: &Attempt<'_>,
        known_client: F,
    ) -> Result<(), RateLimited>
    where
        F: AsyncFnOnce() -> bool,
    {
        let limits = &self.limits;
        let budgets: [(&'static str, String, Limit); 3] = [
            (
                ACCOUNT_CLIENT,
                attempt.account_client(),
                limits.login_failures_per_client,
            ),
            (IP, attempt.client(), limits.login_failures_per_ip),
            (
                ACCOUNT,
                attempt.account(),
                limits.login_failures_per_account,
            ),
        ];
        for (taken, (scope, subject, limit)) in budgets.iter().enumerate() {
            // The client's own address is reported; an account's budgets
            // would tell anyone how close it is to being locked.
            let counted = if *scope == IP {
                self.limiter.hit(scope, subject, *limit).await
            } else {
                self.limiter.hit_unreported(scope, subject, *limit).await
            };
            if let Err(limited) = counted {
                if *scope == ACCOUNT && known_client().await {
                    break;
                }
                // Nothing is tried: give back what this attempt reserved.
                for (scope, subject, _) in &budgets[..=taken] {
                    self.limiter.release(scope, subject).await;
                }
                return Err(limited);
            }
        }
        Ok(())
    }

    /// The client proved itself: its reservations are given back and its
    /// own earlier typos no longer count. A failed attempt keeps them.
    pub async fn succeeded(&self, attempt: &Attempt<'_>) {
        self.limiter
            .reset(ACCOUNT_CLIENT, &attempt.account_client())
            .await;
        self.limiter.release(IP, &attempt.client()).await;
        self.limiter.release(ACCOUNT, &attempt.account()).await;
    }

    /// Current passwords given to change the email or password: the same
    /// tight budget as a client's logins, per session, reserved before the
    /// check, so a stolen access token cannot be used to guess the password.
    pub async fn admit_reauth(&self, session: &str) -> Result<(), RateLimited> {
        self.limiter
            .hit_unreported(REAUTH, session, self.limits.login_failures_per_client)
            .await
    }

    pub async fn reauth_succeeded(&self, session: &str) {
        self.limiter.release(REAUTH, session).await;
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1"),
            client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"));
        assert_eq!(client_key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(client_key("203.0.113.7"), "203.0.113.7");
    }
}
