//! The auth use cases: registration, login, refresh rotation, profile
//! changes, sessions and administration. No tonic here; grpc.rs translates.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use quill_platform::{
    account_cache,
    authn::Caller,
    authz::{Permission, Role},
    cache::Cache,
    config::Secret,
    sessions::{SessionError, SessionSource, SessionStatus, Sessions},
};
use quill_server::db::unique_violation;
use secrecy::ExposeSecret;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    error::AuthError,
    events,
    login_guard::{Attempt, LoginGuard},
    password::PasswordHasherPool,
    repo::{
        sessions::{self, SessionRow},
        users::{self, UserChanges, UserPage, UserRow},
    },
    tokens::{AccessTokenIssuer, IssuedToken, RefreshToken},
    validation::{self, MAX_BIO_CHARS, MAX_IMAGE_CHARS},
};

/// What a successful register, login or refresh hands back.
pub struct Credentials {
    pub access: IssuedToken,
    /// Lives as long as the session (see [`crate::tokens`]).
    pub session: IssuedToken,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub session_id: Uuid,
}

#[derive(Debug, Default, Clone)]
pub struct Client {
    pub user_agent: String,
    pub ip: String,
}

/// Requested profile changes, as received.
#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bio: Option<String>,
    pub image: Option<String>,
    /// Proof for an email or password change.
    pub current_password: Option<Secret>,
}

#[derive(Clone)]
pub struct Accounts {
    pool: PgPool,
    hasher: PasswordHasherPool,
    issuer: Arc<AccessTokenIssuer>,
    sessions: Sessions,
    cached_accounts: Cache,
    guard: LoginGuard,
    refresh_ttl: Duration,
    reauth_window: Duration,
}

/// What `Accounts` is built from, besides the database.
pub struct AccountsParts {
    pub hasher: PasswordHasherPool,
    pub issuer: Arc<AccessTokenIssuer>,
    pub sessions: Sessions,
    /// The gateway's cache of users' own accounts ([`account_cache`]),
    /// which every change to a user's row makes stale.
    pub cached_accounts: Cache,
    pub guard: LoginGuard,
    pub refresh_ttl: Duration,
    pub reauth_window: Duration,
}

impl Accounts {
    pub fn new(pool: PgPool, parts: AccountsParts) -> Self {
        Self {
            pool,
            hasher: parts.hasher,
            issuer: parts.issuer,
            sessions: parts.sessions,
            cached_accounts: parts.cached_accounts,
            guard: parts.guard,
            refresh_ttl: parts.refresh_ttl,
            reauth_window: parts.reauth_window,
        }
    }

    pub fn issuer(&self) -> &AccessTokenIssuer {
        &self.issuer
    }

    pub async fn register(
        &self,
        email: &str,
        username: &str,
        password: Secret,
        client: Client,
    ) -> Result<(UserRow, Credentials), AuthError> {
        self.guard.admit_registration(&client.ip).await?;
        let mut violations = Vec::new();
        let email = validation::email(email, &mut violations);
        let username = validation::username(username, &mut violations);
        validation::password(password.expose_secret(), &mut violations);
        validation::finish(violations)?;

        let hash = self.hasher.hash(password).await?;
        let mut tx = self.pool.begin().await?;
        let user = users::insert(&mut *tx, Uuid::now_v7(), &email, &username, &hash)
            .await
            .map_err(taken_or_db)?;
        events::announce(&mut tx, events::registered(&user)).await?;
        let credentials = self.open_session(&mut tx, &user, &client).await?;
        quill_events::outbox::commit(tx).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok((user, credentials))
    }

    pub async fn login(
        &self,
        email: &str,
        password: Secret,
        client: Client,
    ) -> Result<(UserRow, Credentials), AuthError> {
        let mut violations = Vec::new();
        let email = validation::login_email(email, &mut violations);
        let typed = password.expose_secret();
        if typed.is_empty() {
            violations.push(("password", "can't be blank".to_owned()));
        } else if typed.len() > validation::MAX_PASSWORD_BYTES {
            return Err(AuthError::InvalidCredentials);
        }
        validation::finish(violations)?;

        let user = users::by_email(&self.pool, &email).await?;
        let attempt = Attempt {
            email: &email,
            ip: &client.ip,
        };
        self.guard
            .admit_login(&attempt, async || match &user {
                Some(user) => sessions::seen_client(&self.pool, user.id, &client.ip)
                    .await
                    .unwrap_or(false),
                None => false,
            })
            .await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !self.hasher.verify(password, hash).await? {
            return Err(AuthError::InvalidCredentials);
        }
        self.guard.succeeded(&attempt).await;
        let user = user.ok_or(AuthError::InvalidCredentials)?;
        if user.banned_at.is_some() {
            return Err(AuthError::Banned);
        }
        let mut tx = self.pool.begin().await?;
        let credentials = self.open_session(&mut tx, &user, &client).await?;
        tx.commit().await?;
        Ok((user, credentials))
    }

    /// Rotates a refresh token. A token that was already rotated means it
    /// leaked (or a client raced itself): the whole session is revoked.
    pub async fn refresh(&self, presented: &str) -> Result<(UserRow, Credentials), AuthError> {
        const REJECTED: AuthError = AuthError::Unauthenticated("refresh token is invalid");
        let hash = RefreshToken::hash(presented.trim());
        let mut tx = self.pool.begin().await?;
        let token = sessions::lock_refresh_token(&mut *tx, &hash)
            .await?
            .ok_or(REJECTED)?;
        if token.session_revoked_at.is_some() || token.session_expires_at <= Utc::now() {
            return Err(REJECTED);
        }
        if token.rotated_at.is_some() {
            tracing::warn!(session_id = %token.session_id, "refresh token reuse: revoking session");
            sessions::revoke(
                &mut *tx,
                token.user_id,
                token.session_id,
                "refresh token reuse",
            )
            .await?;
            self.revoke_in_cache(&[token.session_id]).await?;
            tx.commit().await?;
            return Err(REJECTED);
        }
        let user = users::by_id(&mut *tx, token.user_id)
            .await?
            .ok_or(REJECTED)?;
        if user.banned_at.is_some() {
            return Err(AuthError::Banned);
        }
        sessions::mark_rotated(&mut *tx, &hash).await?;
        sessions::touch(&mut *tx, token.session_id).await?;
        let credentials = self
            .issue(&mut tx, &user, token.session_id, token.session_expires_at)
            .await?;
        tx.commit().await?;
        Ok((user, credentials))
    }

    /// The user acting as `caller`, whose session the authentication layer
    /// found live.
    pub async fn current_user(&self, caller: &Caller) -> Result<UserRow, AuthError> {
        users::by_id(&self.pool, caller.user)
            .await?
            .filter(|user| user.banned_at.is_none())
            .ok_or(AuthError::Unauthenticated("session has ended"))
    }

    /// Whether a session may still act, and as which role: the truth behind
    /// every service's session check.
    pub async fn session_status(&self, session: Uuid) -> Result<SessionStatus, AuthError> {
        Ok(session_status(&self.pool, session).await?)
    }

    pub async fn update(
        &self,
        user: &UserRow,
        current_session: Uuid,
        update: ProfileUpdate,
    ) -> Result<UserRow, AuthError> {
        let changes_email = update
            .email
            .as_deref()
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case(&user.email));
        if changes_email || update.password.is_some() {
            self.prove_owner(user, current_session, update.current_password.clone())
                .await?;
        }
        let mut violations = Vec::new();
        let mut changes = UserChanges {
            email: update.email.map(|e| validation::email(&e, &mut violations)),
            username: update
                .username
                .map(|u| validation::username(&u, &mut violations)),
            bio: update.bio.map(|b| {
                validation::optional_text("bio", &b, MAX_BIO_CHARS, false, &mut violations)
            }),
            image: update.image.map(|i| {
                validation::optional_text("image", &i, MAX_IMAGE_CHARS, true, &mut violations)
            }),
            password_hash: None,
        };
        if let Some(password) = &update.password {
            validation::password(password.expose_secret(), &mut violations);
        }
        validation::finish(violations)?;
        // Other services copy these fields; a password change alone is
        // nothing to announce.
        let announced = changes.email.is_some()
            || changes.username.is_some()
            || changes.bio.is_some()
            || changes.image.is_some();
        if let Some(password) = update.password {
            changes.password_hash = Some(self.hasher.hash(password).await?);
        }

        let mut tx = self.pool.begin().await?;
        let updated = users::update(&mut *tx, user.id, &changes)
            .await
            .map_err(taken_or_db)?;
        if announced {
            events::announce(&mut tx, events::updated(&updated)).await?;
        }
        if changes.password_hash.is_some() {
            let others =
                sessions::revoke_all(&mut *tx, user.id, Some(current_session), "password changed")
                    .await?;
            self.revoke_in_cache(&others).await?;
        }
        let committed = quill_events::outbox::commit(tx).await;
        self.changed(user.id).await;
        committed?;
        Ok(updated)
    }

    /// After a change to `user`'s row commits, and before it is answered:
    /// the gateway's cached copy of the account is stale from now on, so
    /// the client's next read shows the change. Called after a commit that
    /// failed too, which may have reached the database: a bump too many
    /// costs one miss.
    async fn changed(&self, user: Uuid) {
        self.cached_accounts
            .invalidate(&[account_cache::version(user)])
            .await;
    }

    /// A stolen access token alone must not take the account over: changing
    /// the email or the password needs the current password, or a session
    /// that a password login opened within the re-authentication window.
    async fn prove_owner(
        &self,
        user: &UserRow,
        session: Uuid,
        current_password: Option<Secret>,
    ) -> Result<(), AuthError> {
        match current_password {
            Some(password) => {
                let key = session.to_string();
                self.guard.admit_reauth(&key).await?;
                if self
                    .hasher
                    .verify(password, Some(user.password_hash.clone()))
                    .await?
                {
                    self.guard.reauth_succeeded(&key).await;
                    Ok(())
                } else {
                    Err(AuthError::ReauthFailed)
                }
            }
            None => {
                let opened = sessions::opened_at(&self.pool, session).await?;
                let window = TimeDelta::from_std(self.reauth_window).unwrap_or_default();
                let fresh = opened.is_some_and(|at| Utc::now() - at <= window);
                if fresh {
                    Ok(())
                } else {
                    Err(AuthError::ReauthRequired)
                }
            }
        }
    }

    pub async fn by_username(&self, username: &str) -> Result<UserRow, AuthError> {
        users::by_username(&self.pool, validation::lookup_username(username)?)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    pub async fn by_ids(&self, ids: &[Uuid]) -> Result<Vec<UserRow>, AuthError> {
        Ok(users::by_ids(&self.pool, ids).await?)
    }

    pub async fn sessions(&self, user: &UserRow) -> Result<Vec<SessionRow>, AuthError> {
        Ok(sessions::list_active(&self.pool, user.id).await?)
    }

    pub async fn revoke_session(
        &self,
        user: &UserRow,
        session: Uuid,
        reason: &str,
    ) -> Result<(), AuthError> {
        let mut tx = self.pool.begin().await?;
        if !sessions::revoke(&mut *tx, user.id, session, reason).await? {
            return Err(AuthError::NotFound("session"));
        }
        self.revoke_in_cache(&[session]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn revoke_all_sessions(&self, user: &UserRow) -> Result<usize, AuthError> {
        let mut tx = self.pool.begin().await?;
        let revoked = sessions::revoke_all(&mut *tx, user.id, None, "logout everywhere").await?;
        self.revoke_in_cache(&revoked).await?;
        tx.commit().await?;
        Ok(revoked.len())
    }

    pub async fn list_users(
        &self,
        actor: &UserRow,
        query: &str,
        limit: u32,
        offset: u32,
    ) -> Result<UserPage, AuthError> {
        require(actor, Permission::UserManage)?;
        let query = validation::user_query(query)?;
        let limit = if limit == 0 { 20 } else { limit.min(100) };
        Ok(users::search(&self.pool, query, i64::from(limit), i64::from(offset)).await?)
    }

    pub async fn set_role(
        &self,
        actor: &UserRow,
        username: &str,
        role: Role,
    ) -> Result<UserRow, AuthError> {
        require(actor, Permission::UserManage)?;
        let mut tx = self.pool.begin().await?;
        let before = users::by_username(&mut *tx, validation::lookup_username(username)?)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        let user = users::set_role(&mut *tx, &before.username, role.as_str())
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        let live: Vec<Uuid> = sessions::list_active(&mut *tx, user.id)
            .await?
            .iter()
            .map(|s| s.id)
            .collect();
        // Every process reads the role from the session cache: overwrite it,
        // so the change holds on the next call. A demotion is written before
        // the commit (if Redis fails, nothing changes), a promotion after it
        // (a failed commit never leaves a role that was not granted).
        let demotion = role < role_of(&before);
        if demotion {
            self.sessions.set_live(&live, user.id, role).await?;
        }
        let committed = tx.commit().await;
        self.changed(user.id).await;
        committed?;
        if !demotion && let Err(e) = self.sessions.set_live(&live, user.id, role).await {
            // The role is granted; sessions whose cached state could not be
            // updated pick it up when their entries expire (a minute).
            tracing::warn!(error = %e, user_id = %user.id, "could not update cached roles");
        }
        Ok(user)
    }

    /// Banning ends every session of the user at once; lifting a ban is
    /// announced like a ban, with `banned` false.
    pub async fn set_banned(
        &self,
        actor: &UserRow,
        username: &str,
        banned: bool,
    ) -> Result<UserRow, AuthError> {
        require(actor, Permission::UserManage)?;
        let mut tx = self.pool.begin().await?;
        let user = users::set_banned(&mut *tx, validation::lookup_username(username)?, banned)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        // Announced on every call, repeats included: consumers converge on
        // the snapshot whatever they saw before.
        events::announce(&mut tx, events::banned(&user)).await?;
        if banned {
            let revoked = sessions::revoke_all(&mut *tx, user.id, None, "banned").await?;
            self.revoke_in_cache(&revoked).await?;
        }
        let committed = quill_events::outbox::commit(tx).await;
        self.changed(user.id).await;
        committed?;
        Ok(user)
    }

    async fn open_session(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        user: &UserRow,
        client: &Client,
    ) -> Result<Credentials, AuthError> {
        let session_id = Uuid::now_v7();
        let expires_at = Utc::now() + self.refresh_ttl;
        sessions::create(
            &mut **tx,
            session_id,
            user.id,
            &client.user_agent,
            &client.ip,
            expires_at,
        )
        .await?;
        self.issue(tx, user, session_id, expires_at).await
    }

    async fn issue(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        user: &UserRow,
        session_id: Uuid,
        session_expires_at: DateTime<Utc>,
    ) -> Result<Credentials, AuthError> {
        let refresh = RefreshToken::generate();
        sessions::add_refresh_token(&mut **tx, &RefreshToken::hash(&refresh.0), session_id).await?;
        let role = role_of(user);
        let access = self.issuer.issue(user.id, session_id, role)?;
        let session =
            self.issuer
                .issue_session_token(user.id, session_id, role, session_expires_at)?;
        Ok(Credentials {
            access,
            session,
            refresh_token: refresh.0,
            // Sessions end at a fixed time, and their refresh tokens with them.
            refresh_expires_at: session_expires_at,
            session_id,
        })
    }

    /// Writes revocations to Redis before the transaction commits: if Redis
    /// fails the change is rolled back, and if the commit fails afterwards the
    /// worst case is a session refused early, never one accepted late.
    async fn revoke_in_cache(&self, sessions: &[Uuid]) -> Result<(), AuthError> {
        // Outlive the longest-lived token (a session token, as long as a
        // session) plus verifier leeway; a lost entry only costs a miss
        // that asks the database again.
        let ttl = self.refresh_ttl + Duration::from_secs(10);
        Ok(self.sessions.end(sessions, ttl).await?)
    }
}

pub fn role_of(user: &UserRow) -> Role {
    // The column's CHECK constraint admits only valid names.
    user.role.parse().unwrap_or(Role::Viewer)
}

fn require(actor: &UserRow, permission: Permission) -> Result<(), AuthError> {
    Ok(role_of(actor).require(permission)?)
}

fn taken_or_db(error: sqlx::Error) -> AuthError {
    match unique_violation(&error) {
        Some("users_email_key") => AuthError::Taken("email"),
        Some("users_username_key") => AuthError::Taken("username"),
        _ => AuthError::Database(error),
    }
}

async fn session_status(pool: &PgPool, session: Uuid) -> Result<SessionStatus, sqlx::Error> {
    Ok(match sessions::live_user_role(pool, session).await? {
        // The column's CHECK constraint admits only valid names.
        Some((user, role)) => SessionStatus::Live {
            user,
            role: role.parse().unwrap_or(Role::Viewer),
        },
        None => SessionStatus::Ended,
    })
}

/// auth checks sessions against its own database; the other processes ask
/// it over `CheckSession`.
pub struct DbSessionSource(pub PgPool);

#[async_trait::async_trait]
impl SessionSource for DbSessionSource {
    async fn status(&self, session: Uuid) -> Result<SessionStatus, SessionError> {
        session_status(&self.0, session)
            .await
            .map_err(|e| SessionError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_profile_update_shows_no_password() {
        let update = ProfileUpdate {
            password: Some("new-secret-password".to_owned().into()),
            current_password: Some("old-secret-password".to_owned().into()),
            bio: Some("visible".into()),
            ..ProfileUpdate::default()
        };
        let printed = format!("{update:?}");
        assert!(printed.contains("visible"));
        assert!(!printed.contains("secret-password"), "{printed}");
    }
}
