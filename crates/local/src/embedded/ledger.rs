//! The users' days as the emulated prefetch Lambda spends them: [`LocalLedger`] counts pre-generated
//! answers in the chat engine's own store, as the real prefetch function counts them in the chat table.
//! The engine is built after its prefetch queue (the queue is one of its parts), so the ledger is handed
//! the engine once it exists ([`LocalLedger::attach`]); until then, and after the engine is gone, it
//! counts nothing and refuses nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use chat::handler::App;
use mangaassist_core::admit::limits::{Limiter, TokenLedger};
use mangaassist_core::ahead::prefetch::PrefetchQueue;
use mangaassist_core::clock::Clock;
use mangaassist_core::ids::UserId;
use mangaassist_core::ports::sources::ContextSources;
use mangaassist_core::ports::{ModelClient, Store};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the ledger needs of an engine, object-safe (the engine's type names the queue the ledger is in).
trait Days: Send + Sync {
    fn left<'a>(&'a self, user: &'a UserId, guest: bool) -> Boxed<'a, bool>;
    fn spend<'a>(&'a self, user: &'a UserId, tokens: u64) -> Boxed<'a, ()>;
}

/// The chat function's state, held weakly (its engine holds the ledger).
struct EngineDays<M, St, C, X, Q>(Weak<App<M, St, C, X, Q>>);

impl<M, St, C, X, Q> Days for EngineDays<M, St, C, X, Q>
where
    M: ModelClient + 'static,
    St: Store + 'static,
    C: Clock + 'static,
    X: ContextSources + 'static,
    Q: PrefetchQueue + 'static,
{
    fn left<'a>(&'a self, user: &'a UserId, guest: bool) -> Boxed<'a, bool> {
        Box::pin(async move {
            let Some(app) = self.0.upgrade() else { return true };
            let e = &app.engine;
            let limits = &e.cfg.limits;
            let tier = if guest { limits.guest } else { limits.user };
            Limiter { store: &e.store, clock: &e.clock, cfg: limits }.has_tokens_left(user, tier).await
        })
    }

    fn spend<'a>(&'a self, user: &'a UserId, tokens: u64) -> Boxed<'a, ()> {
        Box::pin(async move {
            if let Some(app) = self.0.upgrade() {
                let e = &app.engine;
                Limiter { store: &e.store, clock: &e.clock, cfg: &e.cfg.limits }.spend_for(user, tokens).await;
            }
        })
    }
}

/// The chat engine's users' days, once [`attach`](Self::attach)ed.
#[derive(Clone, Default)]
pub struct LocalLedger(Arc<OnceLock<Box<dyn Days>>>);

impl std::fmt::Debug for LocalLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalLedger").field(&self.0.get().is_some()).finish()
    }
}

impl LocalLedger {
    /// Counts in `app`'s engine's store, under its limits, from now on (the first one attached stays).
    pub fn attach<M, St, C, X, Q>(&self, app: &Arc<App<M, St, C, X, Q>>)
    where
        M: ModelClient + 'static,
        St: Store + 'static,
        C: Clock + 'static,
        X: ContextSources + 'static,
        Q: PrefetchQueue + 'static,
    {
        let days: Box<dyn Days> = Box::new(EngineDays(Arc::downgrade(app)));
        if self.0.set(days).is_err() {
            tracing::debug!("the local ledger already counts for an engine");
        }
    }
}

impl TokenLedger for LocalLedger {
    async fn has_tokens_left(&self, user: &UserId, guest: bool) -> bool {
        match self.0.get() {
            Some(days) => days.left(user, guest).await,
            None => true,
        }
    }

    async fn spend(&self, user: &UserId, tokens: u64) {
        if let Some(days) = self.0.get() {
            days.spend(user, tokens).await;
        }
    }
}
