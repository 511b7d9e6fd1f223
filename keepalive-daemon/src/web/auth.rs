//! Basic auth for the HTTP server (--web.config.file basic_auth_users), as Prometheus'
//! exporter-toolkit does it:
//! - an unknown user costs the same as a wrong password: the password is checked against
//!   a dummy bcrypt hash of the users' cost, so timing does not tell which users exist;
//! - bcrypt checks run one at a time, off the runtime thread, so a flood of bad
//!   passwords takes one core, not all of them (and never the runtime thread);
//! - successful checks are cached (bounded), so Prometheus' scrapes do not pay bcrypt
//!   each time. The cache holds SHA-256 digests of user, stored hash and password, never
//!   a password; a lookup compares digests, so its timing says nothing about a password.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering as AtomicOrdering},
    },
};

use base64::Engine as _;
use tokio::sync::Semaphore;

/// Successful checks remembered; beyond this an arbitrary entry makes room. Enough for
/// every user of a normal setup and for a few password changes.
const CACHE_ENTRIES: usize = 256;
/// The cost when no user hash names one (webconfig checks the prefix, not the cost).
const DEFAULT_COST: u32 = 10;

type Digest = [u8; 32];

/// The users and what it takes to check them.
pub struct Auth {
    /// User name -> bcrypt hash.
    users: BTreeMap<String, String>,
    /// Checked instead when the user is unknown; its password is never accepted.
    dummy: String,
    /// One bcrypt check at a time.
    bcrypt: Semaphore,
    /// bcrypt runs in progress, and the most ever at once: what the serialisation
    /// promises, observable without timing anything.
    running: AtomicUsize,
    peak: AtomicUsize,
    cache: Mutex<HashSet<Digest>>,
}

impl Auth {
    /// None when there are no users: everything passes. Computes the dummy hash once
    /// (one bcrypt run, at start-up, before anything is served).
    pub fn new(users: BTreeMap<String, String>) -> Option<Auth> {
        if users.is_empty() {
            return None;
        }
        let cost = users
            .values()
            .filter_map(|h| h.get(4..6)?.parse::<u32>().ok())
            .max()
            .unwrap_or(DEFAULT_COST);
        // A fixed salt: the dummy only has to cost what a real check costs.
        let dummy = bcrypt::hash_with_salt("keepalive-daemon: no such user", cost, [7; 16])
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoY))
            // Out-of-range costs fail in bcrypt itself; then a real check fails as fast.
            .unwrap_or_default();
        Some(Auth {
            users,
            dummy,
            bcrypt: Semaphore::new(1),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            cache: Mutex::new(HashSet::new()),
        })
    }

    /// Whether a request's `Authorization` header value passes.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, self.dummy.clone()),
        };
        let key = cache_key(&user, &hash, &password);
        if known && self.cached(&key) {
            return true;
        }
        // Closed never: the semaphore lives as long as `self`.
        let Ok(_turn) = self.bcrypt.acquire().await else {
            return false;
        };
        let me = self.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let now = me.running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
            me.peak.fetch_max(now, AtomicOrdering::SeqCst);
            let v = bcrypt::verify(password, &hash);
            me.running.fetch_sub(1, AtomicOrdering::SeqCst);
            v
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        let ok = known && verified;
        if ok {
            self.remember(key);
        }
        ok
    }

    fn cached(&self, key: &Digest) -> bool {
        self.cache.lock().is_ok_and(|c| c.contains(key))
    }

    fn remember(&self, key: Digest) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_ENTRIES
            && let Some(old) = cache.iter().next().copied()
        {
            cache.remove(&old);
        }
        cache.insert(key);
    }
}

/// User and password of a `Basic` Authorization header value.
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let encoded = header.trim().strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// SHA-256 over the three fields, each length-prefixed so no two triples collide.
fn cache_key(user: &str, hash: &str, password: &str) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for field in [user, hash, password] {
        ctx.update(&(field.len() as u64).to_le_bytes());
        ctx.update(field.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn header(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn auth(cost: u32) -> Arc<Auth> {
        let hash = bcrypt::hash("s3cret", cost).unwrap();
        Arc::new(Auth::new(BTreeMap::from([("prometheus".to_owned(), hash)])).unwrap())
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let a = auth(4);
        let rt = runtime();
        let check = |h: Option<&[u8]>| rt.block_on(a.check(h));
        assert!(check(Some(&header("prometheus", "s3cret"))));
        assert!(!check(Some(&header("prometheus", "wrong"))));
        assert!(!check(Some(&header("someone", "s3cret"))));
        assert!(!check(None));
        assert!(!check(Some(b"Basic !!!")));
        assert!(!check(Some(b"Bearer abc")));
        assert!(!check(Some(&header("prometheus:", "s3cret"))));
        assert!(Auth::new(BTreeMap::new()).is_none());
    }

    #[test]
    fn the_dummy_hash_has_the_users_cost_and_never_passes() {
        let a = auth(5);
        assert!(a.dummy.starts_with("$2y$05$"), "{}", a.dummy);
        let rt = runtime();
        // Even the dummy's own password is refused: the user does not exist.
        let h = header("ghost", "keepalive-daemon: no such user");
        assert!(!rt.block_on(a.check(Some(&h))));
        assert!(!rt.block_on(a.check(Some(&h))), "a failure is not cached");
    }

    #[test]
    fn successes_are_cached_by_digest_and_failures_are_not() {
        let a = auth(4);
        let rt = runtime();
        assert!(rt.block_on(a.check(Some(&header("prometheus", "s3cret")))));
        assert!(!rt.block_on(a.check(Some(&header("prometheus", "wrong")))));
        let cache = a.cache.lock().unwrap();
        assert_eq!(cache.len(), 1);
        let hash = &a.users["prometheus"];
        assert!(cache.contains(&cache_key("prometheus", hash, "s3cret")));
        // Fields are length-prefixed: moving a byte between them changes the key.
        assert_ne!(cache_key("ab", "c", "d"), cache_key("a", "bc", "d"));
    }

    #[test]
    fn a_cached_success_skips_bcrypt() {
        // Cost 8 takes milliseconds (hundreds in a debug build); a cache hit, microseconds.
        let a = auth(8);
        let rt = runtime();
        let h = header("prometheus", "s3cret");
        let t = Instant::now();
        assert!(rt.block_on(a.check(Some(&h))));
        let first = t.elapsed();
        let t = Instant::now();
        assert!(rt.block_on(a.check(Some(&h))));
        let second = t.elapsed();
        assert!(
            second * 20 < first && second < Duration::from_millis(5),
            "first {first:?}, cached {second:?}"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let a = auth(4);
        for i in 0..CACHE_ENTRIES + 10 {
            a.remember(cache_key("u", "h", &i.to_string()));
        }
        assert_eq!(a.cache.lock().unwrap().len(), CACHE_ENTRIES);
    }

    #[test]
    fn bcrypt_checks_run_one_at_a_time() {
        // Eight wrong passwords at once on a runtime with four workers and a blocking
        // pool: without the semaphore several bcrypt runs overlap (checked below by
        // running the same burst past it); with it, never more than one.
        let a = auth(6);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        // Eight wrong-password checks at once; each must be refused.
        let burst = |auth: &Arc<Auth>| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let a = auth.clone();
                        tokio::spawn(async move { a.check(Some(&header("prometheus", "x"))).await })
                    })
                    .collect();
                for task in tasks {
                    assert!(!task.await.unwrap());
                }
            })
        };
        burst(&a);
        assert_eq!(a.peak.load(AtomicOrdering::SeqCst), 1);
        assert_eq!(a.running.load(AtomicOrdering::SeqCst), 0);
        // The counter does see overlap when there is some: the same burst with the
        // semaphore opened wide.
        let wide = auth(6);
        wide.bcrypt.add_permits(7);
        burst(&wide);
        assert!(wide.peak.load(AtomicOrdering::SeqCst) > 1);
    }
}
