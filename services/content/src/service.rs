//! The use cases of the content service, callable without gRPC: each takes
//! the verified caller and plain values, checks the rules, and runs its SQL
//! (state changes in one transaction each, which writes the outbox event
//! announcing them too).

use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    authors::Authors,
    commenting::{self, Commenting},
    cursor::CursorCodec,
    known_tags::KnownTags,
    publishing::{self, Publishing},
    read_cache::ReadCache,
};

pub struct Content {
    pub(crate) pool: PgPool,
    /// For the statements with optional parts (see the module `repo`):
    /// its connections plan every statement for its parameters.
    pub(crate) lists: PgPool,
    pub(crate) authors: Authors,
    pub(crate) cursors: CursorCodec,
    pub(crate) cache: ReadCache,
    pub(crate) known_tags: Arc<KnownTags>,
    /// The writers of new articles, which share a database round trip
    /// among the articles that arrive together.
    pub(crate) publishing: Publishing,
    /// The writers of new comments, likewise.
    pub(crate) commenting: Commenting,
}

impl Content {
    pub fn new(
        pool: PgPool,
        lists: PgPool,
        authors: Authors,
        cursors: CursorCodec,
        cache: ReadCache,
    ) -> Self {
        let known_tags = Arc::new(KnownTags::default());
        Self {
            publishing: publishing::start(pool.clone(), cache.clone(), Arc::clone(&known_tags)),
            commenting: commenting::start(pool.clone(), cache.clone()),
            pool,
            lists,
            authors,
            cursors,
            cache,
            known_tags,
        }
    }
}
