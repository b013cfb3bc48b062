use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor, Row, postgres::PgRow};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub role: String,
    pub banned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of `UserRow`, spliced into static SQL with `concat!`.
macro_rules! columns {
    () => {
        "id, email, username, password_hash, bio, image, role, banned_at, created_at, updated_at"
    };
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    email: &str,
    username: &str,
    password_hash: &str,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO users (id, email, username, password_hash) VALUES ($1, $2, $3, $4) RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(email)
    .bind(username)
    .bind(password_hash)
    .fetch_one(db)
    .await
}

pub async fn by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE lower(email) = lower($1)"
    ))
    .bind(email)
    .fetch_optional(db)
    .await
}

pub async fn by_username(
    db: impl PgExecutor<'_>,
    username: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE lower(username) = lower($1)"
    ))
    .bind(username)
    .fetch_optional(db)
    .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Changes to a user; `None` leaves a column as it is. For bio and image,
/// `Some(None)` clears.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub bio: Option<Option<String>>,
    pub image: Option<Option<String>>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    changes: &UserChanges,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE users SET
            email = COALESCE($2, email),
            username = COALESCE($3, username),
            password_hash = COALESCE($4, password_hash),
            bio = CASE WHEN $5 THEN $6 ELSE bio END,
            image = CASE WHEN $7 THEN $8 ELSE image END,
            updated_at = greatest(now(), updated_at + interval '1 microsecond')
         WHERE id = $1
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&changes.email)
    .bind(&changes.username)
    .bind(&changes.password_hash)
    .bind(changes.bio.is_some())
    .bind(changes.bio.clone().flatten())
    .bind(changes.image.is_some())
    .bind(changes.image.clone().flatten())
    .fetch_one(db)
    .await
}

pub struct UserPage {
    pub users: Vec<UserRow>,
    pub total: u64,
}

/// One statement for the page and its total (a window count).
pub async fn search(
    db: impl PgExecutor<'_>,
    query: &str,
    limit: i64,
    offset: i64,
) -> Result<UserPage, sqlx::Error> {
    let pattern = format!("%{}%", escape_like(query));
    let rows: Vec<PgRow> = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        ", count(*) OVER () AS total FROM users
         WHERE $1 = '' OR username ILIKE $2 OR email ILIKE $2
         ORDER BY created_at, id
         LIMIT $3 OFFSET $4"
    ))
    .bind(query)
    .bind(pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = match rows.first() {
        Some(row) => row.try_get::<i64, _>("total")? as u64,
        None => 0,
    };
    let users = rows
        .iter()
        .map(UserRow::from_row)
        .collect::<Result<_, _>>()?;
    Ok(UserPage { users, total })
}

pub async fn set_role(
    db: impl PgExecutor<'_>,
    username: &str,
    role: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("UPDATE users SET role = $2, updated_at = greatest(now(), updated_at + interval '1 microsecond') WHERE lower(username) = lower($1) RETURNING ", columns!()))
    .bind(username)
    .bind(role)
    .fetch_optional(db)
    .await
}

pub async fn set_banned(
    db: impl PgExecutor<'_>,
    username: &str,
    banned: bool,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE users
         SET banned_at = CASE WHEN $2 THEN COALESCE(banned_at, now()) END, updated_at = greatest(now(), updated_at + interval '1 microsecond')
         WHERE lower(username) = lower($1)
         RETURNING ",
        columns!()
    ))
    .bind(username)
    .bind(banned)
    .fetch_optional(db)
    .await
}

/// `%`, `_` and `\` in user input are literals, not wildcards.
fn escape_like(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
