//! The read-through cache against the real Redis: what it serves, what makes
//! it stale, and what it does when Redis is gone.

use std::{
    future::IntoFuture,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::FutureExt;
use quill_platform::{
    cache::{Cache, Version},
    testing::{TcpProxy, TestRedis},
};

async fn cache_at(url: &str, prefix: &str) -> Cache {
    let redis = quill_platform::sessions::connect(url).await.expect("redis");
    Cache::new(redis, prefix, Duration::from_secs(60))
}

/// Reads `key` (depending on `deps`) through `cache`, counting loads; the
/// loaded value is `value`.
async fn read(
    cache: &Cache,
    key: &str,
    deps: &[Version],
    loads: &AtomicUsize,
    value: &str,
) -> String {
    cache
        .get_or_load("test", key, deps, || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(value.to_owned())
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_entry_is_served_until_a_version_it_depends_on_is_bumped() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let (article, other) = (Version::new("article:a"), Version::new("article:b"));
    let deps = [article.clone(), Version::new("authors")];
    let loads = AtomicUsize::new(0);

    assert_eq!(read(&cache, "a", &deps, &loads, "first").await, "first");
    assert_eq!(read(&cache, "a", &deps, &loads, "second").await, "first");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the second read is a hit");

    cache.invalidate(&[other]).await;
    assert_eq!(read(&cache, "a", &deps, &loads, "third").await, "first");

    cache.invalidate(&[article]).await;
    assert_eq!(read(&cache, "a", &deps, &loads, "fourth").await, "fourth");
    assert_eq!(read(&cache, "a", &deps, &loads, "fifth").await, "fourth");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// A batch of writes bumps once: the clones of one invalidation share its
/// bump, each awaits its end, and it runs even when nobody awaits it (a
/// request cancelled after its commit).
#[tokio::test]
async fn clones_of_an_invalidation_share_one_bump_that_runs_unawaited() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let (a, b) = ([Version::new("article:a")], [Version::new("article:b")]);
    let loads = AtomicUsize::new(0);
    assert_eq!(read(&cache, "a", &a, &loads, "a1").await, "a1");
    assert_eq!(read(&cache, "b", &b, &loads, "b1").await, "b1");

    let one = cache.start_invalidation(vec![a[0].clone(), b[0].clone(), a[0].clone()]);
    let two = one.clone();
    assert!(one.is_shared_with(&two));
    let nothing = cache.start_invalidation(Vec::new());
    assert!(!one.is_shared_with(&nothing));
    assert!(
        nothing.into_future().now_or_never().is_some(),
        "nothing to bump is done at once"
    );
    one.await;
    assert_eq!(read(&cache, "a", &a, &loads, "a2").await, "a2");
    assert_eq!(read(&cache, "b", &b, &loads, "b2").await, "b2");
    two.await;
    assert_eq!(loads.load(Ordering::SeqCst), 4);

    drop(cache.start_invalidation(a.to_vec()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while read(&cache, "a", &a, &loads, "a3").await != "a3" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unawaited bump did not run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The race a delete-on-write cache loses: a reader loads the old row, the
/// writer commits and invalidates, then the reader stores what it loaded.
#[tokio::test]
async fn what_was_loaded_before_a_commit_is_never_served_after_it() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let deps = [Version::new("article:a")];
    let stale = cache
        .get_or_load("test", "a", &deps, || async {
            // The writer commits and bumps while this load is in flight.
            cache.invalidate(&deps).await;
            Ok::<_, std::convert::Infallible>("before the write".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(stale, "before the write", "the loader's own answer");
    let loads = AtomicUsize::new(0);
    assert_eq!(
        read(&cache, "a", &deps, &loads, "after the write").await,
        "after the write"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_misses_of_one_key_load_it_once() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let readers = (0..20).map(|_| {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("test", "hot", &[Version::new("articles")], || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::convert::Infallible>(42u32)
                })
                .await
                .unwrap()
        })
    });
    for answer in futures::future::join_all(readers).await {
        assert_eq!(answer.unwrap(), 42);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.loads_in_flight(), 0, "no gate outlives its loads");
}

#[tokio::test]
async fn a_failed_load_is_not_stored() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let deps = [Version::new("articles")];
    let failed: Result<String, &str> = cache
        .get_or_load("test", "a", &deps, || async { Err("database down") })
        .await;
    assert_eq!(failed, Err("database down"));
    let loads = AtomicUsize::new(0);
    assert_eq!(read(&cache, "a", &deps, &loads, "loaded").await, "loaded");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// A version key that expired or was evicted restarts at a random value:
/// the entries stored under its earlier life do not match it.
#[tokio::test]
async fn a_lost_version_makes_its_entries_misses() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let deps = [Version::new("article:a")];
    let loads = AtomicUsize::new(0);
    read(&cache, "a", &deps, &loads, "first").await;
    redis.forget("v:").await;
    // A writer's bump on the lost key must not land on the old value either.
    cache.invalidate(&deps).await;
    assert_eq!(read(&cache, "a", &deps, &loads, "second").await, "second");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_redis_every_read_is_answered_by_the_source() {
    let redis = TestRedis::new();
    let upstream: SocketAddr = redis
        .url
        .trim_start_matches("redis://")
        .parse()
        .expect("TEST_REDIS_URL is redis://ip:port");
    let proxy = TcpProxy::start(upstream).await;
    let cache = cache_at(&format!("redis://{}", proxy.addr()), &redis.prefix).await;
    let deps = [Version::new("articles")];
    let loads = AtomicUsize::new(0);
    read(&cache, "a", &deps, &loads, "cached").await;

    proxy.cut();
    for _ in 0..3 {
        assert_eq!(read(&cache, "a", &deps, &loads, "source").await, "source");
    }
    // Bumps fail quietly: the write they follow is made.
    cache.invalidate(&deps).await;
    assert_eq!(loads.load(Ordering::SeqCst), 4);
    let errors = quill_platform::metrics::get()
        .cache_requests
        .with_label_values(&["test", "error"])
        .get();
    assert_eq!(errors, 3);

    // The first failure paused the cache: with Redis back (and the cache's
    // own connection working again, as a bump that lands shows), reads
    // still go to the source for a while, where the entry stored before
    // the cut would otherwise be a hit.
    proxy.restore();
    let probe = Version::new("reconnected");
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut direct = client.get_multiplexed_async_connection().await.unwrap();
    let probe_key = format!("{}v:reconnected", redis.prefix);
    for _ in 0..40 {
        cache.invalidate(std::slice::from_ref(&probe)).await;
        let landed: bool = redis::cmd("EXISTS")
            .arg(&probe_key)
            .query_async(&mut direct)
            .await
            .unwrap();
        if landed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(&cache, "a", &deps, &loads, "paused").await, "paused");
    let batch = cache
        .get_many_or_load(
            "test",
            &[("a".to_owned(), deps.to_vec())],
            |misses| async move {
                Ok::<_, std::convert::Infallible>(
                    misses.iter().map(|_| Some("paused".to_owned())).collect(),
                )
            },
        )
        .await
        .unwrap();
    assert_eq!(batch, [Some("paused".to_owned())]);
}

#[tokio::test]
async fn a_batch_loads_only_its_misses_and_shares_entries_with_single_reads() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let deps = |k: &str| {
        vec![
            Version::new(format!("article:{k}")),
            Version::new("authors"),
        ]
    };
    let loads = AtomicUsize::new(0);
    read(&cache, "a", &deps("a"), &loads, "a from one read").await;
    let entries = vec![("a".to_owned(), deps("a")), ("b".to_owned(), deps("b"))];
    let batch = |expect: Vec<usize>| {
        let cache = cache.clone();
        let entries = entries.clone();
        async move {
            cache
                .get_many_or_load("test", &entries, |misses| async move {
                    assert_eq!(misses, expect);
                    Ok::<_, std::convert::Infallible>(
                        misses
                            .iter()
                            .map(|&i| Some(format!("{i} loaded")))
                            .collect(),
                    )
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        batch(vec![1]).await,
        [
            Some("a from one read".to_owned()),
            Some("1 loaded".to_owned())
        ]
    );
    cache.invalidate(&[Version::new("article:a")]).await;
    assert_eq!(
        batch(vec![0]).await,
        [Some("0 loaded".to_owned()), Some("1 loaded".to_owned())]
    );
    cache.invalidate(&[Version::new("authors")]).await;
    batch(vec![0, 1]).await;
    assert_eq!(
        read(&cache, "b", &deps("b"), &loads, "unused").await,
        "1 loaded"
    );
}

/// Reads `key` through `cache` with its keys fetched by a round trip of the
/// caller's own (as the gateway's session check fetches them), counting
/// loads.
async fn read_along(
    cache: &Cache,
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    deps: &[Version],
    loads: &AtomicUsize,
    value: &str,
) -> String {
    let keys = cache.keys_for(key, deps);
    let found: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg("some-key-of-the-callers")
        .arg(&keys)
        .query_async::<Vec<Option<Vec<u8>>>>(redis)
        .await
        .unwrap()
        .split_off(1);
    cache
        .get_or_load_found("test", key, deps, Some(found), || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(value.to_owned())
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_read_along_another_is_served_and_made_stale_like_its_own() {
    let redis = TestRedis::new();
    let cache = cache_at(&redis.url, &redis.prefix).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut direct = client.get_multiplexed_async_connection().await.unwrap();
    let deps = [Version::new("user:a")];
    let loads = AtomicUsize::new(0);

    let first = read_along(&cache, &mut direct, "a", &deps, &loads, "first").await;
    assert_eq!(first, "first");
    let again = read_along(&cache, &mut direct, "a", &deps, &loads, "second").await;
    assert_eq!(again, "first", "a hit, stored by the miss before it");
    assert_eq!(
        read(&cache, "a", &deps, &loads, "third").await,
        "first",
        "the entry a read of its own finds"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    cache.invalidate(&deps).await;
    let fresh = read_along(&cache, &mut direct, "a", &deps, &loads, "fourth").await;
    assert_eq!(fresh, "fourth");

    // A miss whose keys were read before a change committed and bumped,
    // loaded after it (the gateway's session check, then auth): what that
    // load stores is stale on arrival.
    let keys = cache.keys_for("b", &deps);
    let early: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut direct)
        .await
        .unwrap();
    cache.invalidate(&deps).await;
    let loaded = cache
        .get_or_load_found("test", "b", &deps, Some(early), || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>("read before the change".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "read before the change", "the loader's own answer");
    let after = read_along(&cache, &mut direct, "b", &deps, &loads, "after").await;
    assert_eq!(after, "after", "never served once the change is answered");
    assert_eq!(loads.load(Ordering::SeqCst), 4);

    // The caller's round trip failed: the source answers, as for a read
    // of the cache's own that fails.
    let answered = cache
        .get_or_load_found("test", "a", &deps, None, || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>("source".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(answered, "source");
    assert_eq!(loads.load(Ordering::SeqCst), 5);
}
