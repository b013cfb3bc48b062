//! New articles and comments are written in batches: what arrives while
//! the writers are busy goes out together, each request with its own
//! answer and event, and a batch the database rejects fails only the item
//! it rejects. The writers are held mid-write by a transaction of the
//! test's, so that what the test sends meanwhile queues behind them.

use crate::support;

use std::{future::Future, time::Duration};

use quill_proto::{content::v1 as pb, events::v1::envelope::Payload};
use support::{User, World, as_user, assert_code};
use tonic::Code;

use crate::articles::new_article;

/// Content's two writers of one kind, each held in the middle of a write
/// that waits for a lock this transaction holds. What is written meanwhile
/// queues, and goes out in one batch once `open` lets the writers go.
struct HeldWriters {
    gate: sqlx::Transaction<'static, sqlx::Postgres>,
    held: Vec<tokio::task::JoinHandle<()>>,
}

impl HeldWriters {
    /// Runs `gate` in a transaction kept open, then starts `write(n)` for
    /// each writer, which must wait for `gate`'s lock, once content knows
    /// every one of `users` (one new here would be fetched from auth and
    /// written in a batch of its own).
    async fn hold<F>(
        pool: &sqlx::PgPool,
        users: &[&User],
        gate: &str,
        write: impl Fn(i64) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let ids: Vec<uuid::Uuid> = users.iter().map(|a| a.id.parse().unwrap()).collect();
        support::eventually("content knows every user", || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM authors WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_one(pool)
                .await
                .unwrap()
                == i64::try_from(ids.len()).unwrap()
        })
        .await;
        let mut gate_tx = pool.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(gate.to_owned()))
            .execute(&mut *gate_tx)
            .await
            .unwrap();
        // One at a time: two arriving together would share one writer.
        let mut held = Vec::new();
        for n in 1..=2_i64 {
            held.push(tokio::spawn(write(n)));
            support::eventually("the writer waits for the gate", || async {
                support::lock_waiters(pool).await == n
            })
            .await;
        }
        Self {
            gate: gate_tx,
            held,
        }
    }

    /// Holds the article writers on articles by `users[0]` with the tag
    /// `gate`, which this transaction inserts and keeps uncommitted.
    async fn articles(world: &World, pool: &sqlx::PgPool, users: &[&User]) -> Self {
        let author = users[0].clone();
        Self::hold(
            pool,
            users,
            "INSERT INTO tags (name) VALUES ('gate')",
            |n| {
                let mut client = world.client();
                let request = as_user(&author, new_article(&format!("Held {n}"), &["gate"]));
                async move {
                    client.create_article(request).await.unwrap();
                }
            },
        )
        .await
    }

    /// Holds the comment writers on comments by `users[0]` on the article
    /// `slug`, inserting them while this transaction keeps the table of
    /// comments locked against writes.
    async fn comments(world: &World, pool: &sqlx::PgPool, users: &[&User], slug: &str) -> Self {
        let commenter = users[0].clone();
        Self::hold(pool, users, "LOCK TABLE comments IN SHARE MODE", |n| {
            let mut client = world.client();
            let request = as_user(&commenter, comment_on(slug, &format!("Held {n}")));
            async move {
                client.add_comment(request).await.unwrap();
            }
        })
        .await
    }

    /// Lets the writers go, once what the test wrote meanwhile has had
    /// ample time to queue behind them.
    async fn open(self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.gate.commit().await.unwrap();
        for held in self.held {
            held.await.unwrap();
        }
    }
}

fn comment_on(slug: &str, body: &str) -> pb::AddCommentRequest {
    pb::AddCommentRequest {
        slug: slug.to_owned(),
        body: body.to_owned(),
    }
}

/// Items written in a batch beside another, by this process's writers of
/// `batch` so far (a batch of n counts n - 1): nextest runs each test in a
/// process of its own.
fn sharing_a_batch(batch: &str) -> u64 {
    let sizes = quill_platform::metrics::get()
        .write_batch_size
        .with_label_values(&[batch]);
    // Sizes are whole numbers, so the sum is exact.
    sizes.get_sample_sum() as u64 - sizes.get_sample_count()
}

/// The transactions that wrote the rows of `table` whose `column` starts
/// with `prefix`.
async fn writing_transactions(pool: &sqlx::PgPool, table: &str, column: &str, prefix: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT xmin::text) FROM {table} WHERE {column} LIKE $1"
    )))
    .bind(format!("{prefix}%"))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Articles published while the writers are busy are written together:
/// several authors and a shared title in one batch each come out whole,
/// with their own author, tags and a slug of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_published_together_are_written_in_one_transaction() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let pool = world.content_db().await;
    let writers = HeldWriters::articles(&world, &pool, &[&alice, &bob]).await;

    let queued: Vec<_> = (0..10)
        .map(|n| {
            let author = if n % 2 == 0 { &alice } else { &bob };
            // Four share a title, so three find its slug taken and go again.
            let title = if n < 4 {
                "Twin".to_owned()
            } else {
                format!("Queued {n}")
            };
            let request = as_user(author, new_article(&title, &["batched", &format!("t{n}")]));
            let mut client = world.client();
            let author = author.username.clone();
            tokio::spawn(async move { (author, client.create_article(request).await) })
        })
        .collect();
    writers.open().await;

    let mut slugs = std::collections::HashSet::new();
    for (n, queued) in queued.into_iter().enumerate() {
        let (author, answer) = queued.await.unwrap();
        let article = answer.unwrap().into_inner();
        let stored = world.get(None, &article.slug).await.unwrap();
        assert_eq!(stored.author.unwrap().username, author);
        assert_eq!(stored.tags, ["batched".to_owned(), format!("t{n}")]);
        assert!(slugs.insert(article.slug), "a slug of its own");
    }
    let transactions = writing_transactions(&pool, "articles", "title", "Queued").await;
    assert!(
        transactions <= 2,
        "6 articles published while the writers were busy took {transactions} transactions"
    );
}

/// Holds every outbox relay of the test's content back by two seconds
/// before it marks a batch sent, and so before its bump of the cache: what
/// a test reads meanwhile is fresh only if the writer made it so.
async fn slow_relay(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION slow_relay() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
         CREATE TRIGGER slow_relay BEFORE UPDATE ON outbox
             FOR EACH STATEMENT EXECUTE FUNCTION slow_relay();",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Queues six writes behind the held `writers`, each followed at once by a
/// read of a cached list (`write_then_read(n)` answers what it wrote and
/// what it then read), lets the writers go, and checks that every read
/// holds its own write.
async fn each_reads_its_own_write<T, F>(
    batch: &str,
    writers: HeldWriters,
    write_then_read: impl Fn(usize) -> F,
) where
    T: PartialEq + std::fmt::Debug + Send + 'static,
    F: Future<Output = (T, Vec<T>)> + Send + 'static,
{
    let queued: Vec<_> = (0..6).map(|n| tokio::spawn(write_then_read(n))).collect();
    writers.open().await;
    for queued in queued {
        let (own, listed) = queued.await.unwrap();
        assert!(listed.contains(&own), "{own:?} is not in {listed:?}");
    }
    assert!(sharing_a_batch(batch) >= 1, "some were written together");
}

/// Whether this process's cache `cache` has served a read.
fn served_from_cache(cache: &str) -> bool {
    quill_platform::metrics::get()
        .cache_requests
        .with_label_values(&[cache, "hit"])
        .get()
        >= 1
}

/// A batch makes stale what all its articles changed in one bump, and
/// answers each author only after it: each reads the list, cached before
/// the batch, with their own article in it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_author_of_a_batch_reads_their_own_article_in_the_cached_list() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let pool = world.content_db().await;
    let newest = || pb::ListArticlesRequest {
        limit: 20,
        ..Default::default()
    };
    slow_relay(&pool).await;
    let writers = HeldWriters::articles(&world, &pool, &[&alice, &bob]).await;
    world.list(None, newest()).await.unwrap();
    world.list(None, newest()).await.unwrap();
    assert!(
        served_from_cache("list"),
        "the list before the batch is cached"
    );

    each_reads_its_own_write("articles", writers, |n| {
        let author = if n % 2 == 0 { &alice } else { &bob };
        let request = as_user(author, new_article(&format!("Fresh {n}"), &[]));
        let mut client = world.client();
        async move {
            let own = client.create_article(request).await.unwrap().into_inner();
            let listed = client.list_articles(newest()).await.unwrap().into_inner();
            (
                own.slug,
                listed.articles.into_iter().map(|a| a.slug).collect(),
            )
        }
    })
    .await;
}

/// Likewise for comments: each commenter of a batch reads the article's
/// comments, cached before the batch, with their own comment in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commenter_of_a_batch_reads_their_own_comment_in_the_cached_list() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let held = world.article_by(&alice, "Held", &[]).await;
    let target = world.article_by(&bob, "Target", &[]).await;
    let pool = world.content_db().await;
    let listing = pb::ListCommentsRequest {
        slug: target.slug.clone(),
        ..Default::default()
    };
    slow_relay(&pool).await;
    let writers = HeldWriters::comments(&world, &pool, &[&alice, &bob], &held.slug).await;
    for _ in 0..2 {
        world.client().list_comments(listing.clone()).await.unwrap();
    }
    assert!(
        served_from_cache("comments"),
        "the comments before the batch are cached"
    );

    each_reads_its_own_write("comments", writers, |n| {
        let commenter = if n % 2 == 0 { &alice } else { &bob };
        let request = as_user(commenter, comment_on(&target.slug, &format!("Fresh {n}")));
        let (mut client, listing) = (world.client(), listing.clone());
        async move {
            let own = client.add_comment(request).await.unwrap().into_inner();
            let listed = client.list_comments(listing).await.unwrap().into_inner();
            (own.id, listed.comments.into_iter().map(|c| c.id).collect())
        }
    })
    .await;
}

/// A batch the database rejects is written again article by article, so
/// that only the article it rejects fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_article_the_database_rejects_fails_alone() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let pool = world.content_db().await;
    reject_poison(&pool, "articles", "title").await;
    let writers = HeldWriters::articles(&world, &pool, &[&alice]).await;

    let slugs = only_the_poison_fails(writers, "articles", |title| {
        let request = as_user(&alice, new_article(title, &[]));
        let mut client = world.client();
        async move {
            let article = client.create_article(request).await?.into_inner();
            Ok(article.slug)
        }
    })
    .await;
    for slug in slugs {
        world.get(None, &slug).await.unwrap();
    }
}

/// Comments added while the writers are busy are written together: by
/// several commenters on several articles, each with its own answer and
/// its own event naming its own article; one on an article that is not
/// there fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_added_together_are_written_in_one_transaction() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let held = world.article_by(&alice, "Held", &[]).await;
    let first = world.article_by(&alice, "First", &[]).await;
    let second = world.article_by(&bob, "Second", &[]).await;
    let probe = world.auth.probe("probe", &["comment.*"]).await;
    let pool = world.content_db().await;
    let writers = HeldWriters::comments(&world, &pool, &[&alice, &bob], &held.slug).await;

    let queued: Vec<_> = (0..7)
        .map(|n| {
            let commenter = if n % 2 == 0 { &alice } else { &bob };
            let slug = match n {
                6 => "not-there",
                n if n % 3 == 0 => &first.slug,
                _ => &second.slug,
            };
            let request = as_user(commenter, comment_on(slug, &format!("Queued {n}")));
            let mut client = world.client();
            let expected = (commenter.username.clone(), slug.to_owned());
            tokio::spawn(async move { (expected, client.add_comment(request).await) })
        })
        .collect();
    writers.open().await;

    let mut written = std::collections::HashMap::new();
    for (n, queued) in queued.into_iter().enumerate() {
        let ((commenter, slug), answer) = queued.await.unwrap();
        if n == 6 {
            assert_code(answer, Code::NotFound);
            continue;
        }
        let comment = answer.unwrap().into_inner();
        assert_eq!(comment.body, format!("Queued {n}"));
        assert_eq!(comment.author.unwrap().username, commenter);
        written.insert(comment.id, (comment.body, commenter, slug));
    }
    for slug in [&first.slug, &second.slug] {
        let listed = world
            .client()
            .list_comments(pb::ListCommentsRequest {
                slug: slug.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for comment in listed.comments {
            let (_, _, on) = &written[&comment.id];
            assert_eq!(on, slug, "{} is on its own article", comment.body);
        }
    }
    // Each event names its own comment, commenter and article (the two
    // held comments' events are among them).
    for _ in 0..2 + written.len() {
        let event = probe.next().await;
        let Some(Payload::CommentAdded(added)) = event.payload else {
            panic!("{event:?}");
        };
        let Some((body, commenter, slug)) = written.get(&added.comment_id) else {
            continue;
        };
        assert_eq!(
            (
                &added.body,
                &added.commenter_username,
                &added.article.unwrap().slug
            ),
            (body, commenter, slug)
        );
    }
    let transactions = writing_transactions(&pool, "comments", "body", "Queued").await;
    assert!(
        transactions <= 2,
        "6 comments added while the writers were busy took {transactions} transactions"
    );
}

/// Comments on an article an edit holds wait for the edit each in its own
/// request, not in the writers: a comment on another article goes out
/// meanwhile, and those on the edited one then name it as edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_on_an_article_being_edited_hold_up_no_other_comment() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let edited = world.article_by(&alice, "Before", &[]).await;
    let other = world.article_by(&alice, "Other", &[]).await;
    let probe = world.auth.probe("probe", &["comment.*"]).await;
    let pool = world.content_db().await;
    let mut edit = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE articles SET title = 'After', updated_at = clock_timestamp() WHERE slug = $1",
    )
    .bind(&edited.slug)
    .execute(&mut *edit)
    .await
    .unwrap();
    // As many as there are writers, one at a time, each waiting on the edit.
    let mut waiting = Vec::new();
    for n in 1..=2_i64 {
        let mut client = world.client();
        let request = as_user(&alice, comment_on(&edited.slug, &format!("Waits {n}")));
        waiting.push(tokio::spawn(
            async move { client.add_comment(request).await },
        ));
        support::eventually("the comment waits for the edit", || async {
            support::lock_waiters(&pool).await == n
        })
        .await;
    }

    let meanwhile = tokio::time::timeout(
        Duration::from_secs(5),
        world
            .client()
            .add_comment(as_user(&alice, comment_on(&other.slug, "Meanwhile"))),
    )
    .await
    .expect("a comment on another article waited for the edit")
    .unwrap()
    .into_inner();
    assert_eq!(meanwhile.body, "Meanwhile");

    edit.commit().await.unwrap();
    for waiting in waiting {
        waiting.await.unwrap().unwrap();
    }
    for _ in 0..3 {
        let event = probe.next().await;
        let Some(Payload::CommentAdded(added)) = event.payload else {
            panic!("{event:?}");
        };
        let title = added.article.unwrap().title;
        let expected = if added.body == "Meanwhile" {
            "Other"
        } else {
            "After"
        };
        assert_eq!(title, expected, "{} names its article as it is", added.body);
    }
}

/// A batch of comments the database rejects is written again comment by
/// comment, so that only the comment it rejects fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_the_database_rejects_fails_alone() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let held = world.article_by(&alice, "Held", &[]).await;
    let article = world.article_by(&alice, "Open", &[]).await;
    let pool = world.content_db().await;
    reject_poison(&pool, "comments", "body").await;
    let writers = HeldWriters::comments(&world, &pool, &[&alice], &held.slug).await;

    let bodies = only_the_poison_fails(writers, "comments", |body| {
        let request = as_user(&alice, comment_on(&article.slug, body));
        let mut client = world.client();
        async move {
            let comment = client.add_comment(request).await?.into_inner();
            Ok(comment.body)
        }
    })
    .await;
    assert_eq!(bodies, ["Fine 1", "Fine 2", "Fine 3"]);
}

/// Sends "Poison" and three fine items with `send` (each answering with
/// what it wrote) while `writers` are held; checks that the four went out
/// as one batch of `batch` first and that only the poison failed. Returns
/// what the others wrote.
async fn only_the_poison_fails<F>(
    writers: HeldWriters,
    batch: &str,
    send: impl Fn(&'static str) -> F,
) -> Vec<String>
where
    F: Future<Output = Result<String, tonic::Status>> + Send + 'static,
{
    let shared_before = sharing_a_batch(batch);
    let queued: Vec<_> = ["Poison", "Fine 1", "Fine 2", "Fine 3"]
        .into_iter()
        .map(|item| tokio::spawn(send(item)))
        .collect();
    writers.open().await;

    let mut answers = Vec::new();
    for queued in queued {
        answers.push(queued.await.unwrap());
    }
    assert_eq!(
        sharing_a_batch(batch) - shared_before,
        3,
        "the four were written as one batch first"
    );
    assert_code(answers.remove(0), Code::Internal);
    answers.into_iter().map(Result::unwrap).collect()
}

/// A trigger that refuses a row of `table` whose `column` is 'Poison'.
async fn reject_poison(pool: &sqlx::PgPool, table: &str, column: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.{column} = 'Poison' THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER reject_poison BEFORE INSERT ON {table} \
         FOR EACH ROW EXECUTE FUNCTION reject_poison();"
    )))
    .execute(pool)
    .await
    .unwrap();
}
