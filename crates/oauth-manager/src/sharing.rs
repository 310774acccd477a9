//! Sharing: what this process tells the other processes using the same store (rate-limit
//! cooldowns, disabled/enabled, dead grants), delivered in the order it was decided and retried
//! until the store takes it.
//!
//! A decision is queued first and sent by one sender at a time, so a disable followed by an
//! enable reaches the store (and the other replicas) in that order; a send that fails (the
//! database is down) stays queued and is retried by the next decision or maintenance tick, as is
//! anything decided outside a tokio runtime (no task can be spawned there). A newer decision about
//! the same credential and aspect replaces a queued older one, so the queue stays as small as the
//! set of credentials with something unsent.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use oauth_core::CredentialId;
use oauth_store::{CredentialStore, SharedState, StoreError};

/// Upper bound of the queue (credentials × aspects with an unsent decision); past it the oldest
/// decision is dropped, and the other processes' maintenance reads converge on what the store
/// holds.
const MAX_QUEUED: usize = 8192;

/// One decision to share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// Keep off this credential until `until` (wall time).
    Cooldown {
        id: CredentialId,
        until: DateTime<Utc>,
    },
    /// The credential's state, decided at stored `version`.
    State {
        id: CredentialId,
        state: SharedState,
        version: Option<u64>,
    },
}

impl Outgoing {
    fn id(&self) -> &CredentialId {
        match self {
            Self::Cooldown { id, .. } | Self::State { id, .. } => id,
        }
    }

    /// What the decision is about besides its credential: a newer decision about the same
    /// credential and aspect replaces it.
    fn aspect(&self) -> &'static str {
        match self {
            Self::Cooldown { .. } => "cooldown",
            Self::State { state, .. } => state.aspect(),
        }
    }

    fn is_about(&self, id: &CredentialId, aspect: &str) -> bool {
        self.id() == id && self.aspect() == aspect
    }

    fn same_key(&self, other: &Self) -> bool {
        other.is_about(self.id(), self.aspect())
    }

    /// `self` merged with an older decision of the same key: a cooldown keeps the later end (as
    /// the store does), a state is simply the newer one.
    fn merged_with(self, older: &Self) -> Self {
        match (self, older) {
            (Self::Cooldown { id, until }, Self::Cooldown { until: old, .. }) => Self::Cooldown {
                id,
                until: until.max(*old),
            },
            (newer, _) => newer,
        }
    }

    async fn send(&self, store: &dyn CredentialStore, provider: &str) -> Result<(), StoreError> {
        match self {
            Self::Cooldown { id, until } => store.publish_cooldown(provider, id, *until).await,
            Self::State { id, state, version } => {
                store.publish_state(provider, id, *state, *version).await
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// The decision being sent now (taken off `items`), so it still counts as pending.
    sending: Option<Outgoing>,
}

/// The sharing component: a queue of decisions and its one sender.
pub(crate) struct Sharing {
    store: Arc<dyn CredentialStore>,
    provider: String,
    queue: Mutex<Queue>,
    /// Held by the one sender at a time.
    sender: tokio::sync::Mutex<()>,
    /// Bumped on every decision queued: a reader of the store's states that saw it change while
    /// it read skips what it read (it may predate the decision).
    decided: AtomicU64,
    /// A send failed and has not succeeded since (logged once per outage).
    failing: AtomicBool,
    /// A sender is scheduled or running: at most one at a time, so decisions made during an
    /// outage do not pile up tasks each waiting out a timeout.
    scheduled: AtomicBool,
    /// The latest cooldown end known here per credential (decided here or adopted), so a kept
    /// cooldown re-read at every maintenance tick is applied (and reported) once.
    cooldowns: Mutex<HashMap<CredentialId, DateTime<Utc>>>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl Sharing {
    pub(crate) fn new(store: Arc<dyn CredentialStore>, provider: String) -> Self {
        Self {
            store,
            provider,
            queue: Mutex::default(),
            sender: tokio::sync::Mutex::new(()),
            decided: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            cooldowns: Mutex::default(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Each change is one push, pop or swap: a panic cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decisions not yet taken by the store.
    pub(crate) fn queued(&self) -> usize {
        let q = self.queue();
        q.items.len() + usize::from(q.sending.is_some())
    }

    /// A counter that moves whenever a decision is queued (see [`Self::decided`]).
    pub(crate) fn decisions(&self) -> u64 {
        self.decided.load(Ordering::Acquire)
    }

    /// Whether a decision about `id`'s `aspect` is still to be sent: what the store or its feed
    /// says about it is older than what this process decided.
    pub(crate) fn pending(&self, id: &CredentialId, aspect: &str) -> bool {
        let q = self.queue();
        q.sending
            .iter()
            .chain(q.items.iter())
            .any(|o| o.is_about(id, aspect))
    }

    /// Records that `id` cools down until `until` here; false when a cooldown ending as late or
    /// later was known already (nothing new to apply). Ended ones are forgotten as it goes.
    pub(crate) fn note_cooldown(
        &self,
        id: &CredentialId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let mut known = self.known_cooldowns();
        if known.get(id).is_some_and(|kept| *kept >= until) {
            return false;
        }
        if known.len() >= MAX_QUEUED {
            known.retain(|_, kept| *kept > now);
        }
        known.insert(id.clone(), until);
        true
    }

    /// Forgets everything about a credential removed from the pool: its unsent decisions (a
    /// disable sent after the delete would be kept for a credential re-created later) and the
    /// cooldown end known for it.
    pub(crate) fn forget(&self, id: &CredentialId) {
        self.queue().items.retain(|o| o.id() != id);
        self.known_cooldowns().remove(id);
    }

    fn known_cooldowns(&self) -> MutexGuard<'_, HashMap<CredentialId, DateTime<Utc>>> {
        // One insert, remove or retain at a time: a panic cannot leave it half-changed.
        self.cooldowns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` and, inside a tokio runtime, has it sent on a task of its own unless a
    /// sender is already scheduled (outside one, the next call inside one or the next maintenance
    /// tick sends it). `now` is the wall time, for dropping cooldowns that ended before they could
    /// be sent.
    pub(crate) fn share(self: &Arc<Self>, item: Outgoing, now: DateTime<Utc>) {
        if let Outgoing::Cooldown { id, until } = &item {
            self.note_cooldown(id, *until, now);
        }
        {
            let mut q = self.queue();
            let item = match q.items.iter().position(|o| o.same_key(&item)) {
                Some(at) => match q.items.remove(at) {
                    Some(older) => item.merged_with(&older),
                    None => item,
                },
                None => item,
            };
            q.items.push_back(item);
            if q.items.len() > MAX_QUEUED
                && let Some(dropped) = q.items.pop_front()
            {
                tracing::warn!(
                    credential = %dropped.id(),
                    "too many unsent shared decisions; dropped the oldest"
                );
            }
        }
        self.decided.fetch_add(1, Ordering::AcqRel);
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && !self.scheduled.swap(true, Ordering::AcqRel)
        {
            // Moved into the task: a task dropped before it ran (its runtime shut down) or
            // while it ran still gives the sender role back.
            let mut role = SenderRole(Some(Arc::clone(self)));
            rt.spawn(async move {
                while let Some(this) = role.0.clone() {
                    let sent = this.flush(now).await;
                    role.give_back();
                    // Stop after a failure (the next decision or tick retries), or when nothing
                    // is left or another sender took over.
                    if !sent
                        || this.queue().items.is_empty()
                        || this.scheduled.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    role.0 = Some(this);
                }
            });
        }
    }

    /// Sends what is queued unless a sender is at work already (the maintenance tick does not
    /// wait behind one stuck in a timeout). Returns whether the queue is empty.
    pub(crate) async fn flush_unless_sending(&self, now: DateTime<Utc>) -> bool {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _role = SenderRole::borrowed(&self.scheduled);
        self.flush(now).await
    }

    /// Sends what is queued, in order, one sender at a time; stops at the first failure the store
    /// may recover from (unavailable or retryable), leaving it queued, and drops (and logs) a
    /// decision the store refuses for good, so one bad decision cannot hold back the others.
    /// Returns whether the queue is empty.
    pub(crate) async fn flush(&self, now: DateTime<Utc>) -> bool {
        let _sender = self.sender.lock().await;
        loop {
            let item = {
                let mut q = self.queue();
                let Some(item) = q.items.pop_front() else {
                    return true;
                };
                if matches!(&item, Outgoing::Cooldown { until, .. } if *until <= now) {
                    continue; // ended before it could be sent: nobody needs it now
                }
                q.sending = Some(item.clone());
                item
            };
            // A flush dropped while sending (its task aborted) puts the decision back.
            let mut in_flight = InFlight(Some(self));
            let sent = item.send(self.store.as_ref(), &self.provider).await;
            in_flight.0 = None; // finished: handled below
            let mut q = self.queue();
            q.sending = None;
            match sent {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(provider = %self.provider, "sharing with the store works again");
                    }
                }
                Err(e) if !(e.is_unavailable() || e.is_retryable()) => {
                    tracing::warn!(
                        provider = %self.provider,
                        credential = %item.id(),
                        error = %e,
                        "the store refused a shared decision; dropped it"
                    );
                }
                Err(e) => {
                    // Back at the front, unless a newer decision of the same key was queued
                    // meanwhile (it then carries this one's cooldown end too).
                    match q.items.iter_mut().find(|o| o.same_key(&item)) {
                        Some(newer) => *newer = newer.clone().merged_with(&item),
                        None => q.items.push_front(item.clone()),
                    }
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            provider = %self.provider,
                            credential = %item.id(),
                            error = %e,
                            "sharing with the store failed; kept for retry"
                        );
                    }
                    return false;
                }
            }
        }
    }
}

/// The sender role (`Sharing::scheduled`), given back when dropped.
struct SenderRole(Option<Arc<Sharing>>);

impl SenderRole {
    fn give_back(&mut self) {
        if let Some(sharing) = self.0.take() {
            sharing.scheduled.store(false, Ordering::Release);
        }
    }

    /// For a sender borrowing the component (the maintenance tick's flush).
    fn borrowed(scheduled: &AtomicBool) -> impl Drop + '_ {
        struct Borrowed<'a>(&'a AtomicBool);
        impl Drop for Borrowed<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        Borrowed(scheduled)
    }
}

impl Drop for SenderRole {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// A decision being sent: if the send is dropped before it finished, the decision goes back to
/// the front of the queue (unless a newer one of the same key was queued meanwhile) and no
/// longer counts as being sent.
struct InFlight<'a>(Option<&'a Sharing>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(sharing) = self.0 else {
            return;
        };
        let mut q = sharing.queue();
        if let Some(item) = q.sending.take() {
            match q.items.iter_mut().find(|o| o.same_key(&item)) {
                Some(newer) => *newer = newer.clone().merged_with(&item),
                None => q.items.push_front(item),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use oauth_store::MemoryStore;

    fn id(s: &str) -> CredentialId {
        CredentialId::new(s).expect("valid id")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("valid")
    }

    fn state(c: &str, state: SharedState) -> Outgoing {
        Outgoing::State {
            id: id(c),
            state,
            version: None,
        }
    }

    #[test]
    fn a_newer_decision_replaces_a_queued_one_of_the_same_aspect_only() {
        // No runtime: nothing is sent, everything stays queued.
        let sharing = Arc::new(Sharing::new(Arc::new(MemoryStore::new()), "p".into()));
        sharing.share(state("a", SharedState::Disabled), at(0));
        sharing.share(
            Outgoing::State {
                id: id("a"),
                state: SharedState::NeedsReauthorization,
                version: Some(2),
            },
            at(0),
        );
        sharing.share(state("a", SharedState::Enabled), at(0));
        sharing.share(
            Outgoing::Cooldown {
                id: id("a"),
                until: at(60),
            },
            at(0),
        );
        sharing.share(
            Outgoing::Cooldown {
                id: id("a"),
                until: at(30),
            },
            at(0),
        );
        assert_eq!(sharing.queued(), 3);
        assert!(sharing.pending(&id("a"), "enablement"));
        assert!(sharing.pending(&id("a"), "grant"));
        assert!(!sharing.pending(&id("b"), "enablement"));
        let q = sharing.queue();
        assert_eq!(q.items[1], state("a", SharedState::Enabled));
        assert_eq!(
            q.items[2],
            Outgoing::Cooldown {
                id: id("a"),
                until: at(60)
            },
            "a shorter cooldown does not cut a queued longer one short"
        );
    }

    #[test]
    fn a_cooldown_is_new_only_when_it_ends_later() {
        let sharing = Sharing::new(Arc::new(MemoryStore::new()), "p".into());
        assert!(sharing.note_cooldown(&id("a"), at(60), at(0)));
        assert!(!sharing.note_cooldown(&id("a"), at(60), at(0)));
        assert!(!sharing.note_cooldown(&id("a"), at(30), at(0)));
        assert!(sharing.note_cooldown(&id("a"), at(90), at(0)));
        assert!(sharing.note_cooldown(&id("b"), at(10), at(0)));
    }

    #[test]
    fn the_queue_is_bounded() {
        let sharing = Arc::new(Sharing::new(Arc::new(MemoryStore::new()), "p".into()));
        for i in 0..=MAX_QUEUED {
            sharing.share(state(&format!("c{i}"), SharedState::Disabled), at(0));
        }
        assert_eq!(sharing.queued(), MAX_QUEUED);
        assert!(!sharing.pending(&id("c0"), "enablement"), "the oldest went");
        assert_eq!(
            sharing.decisions(),
            u64::try_from(MAX_QUEUED).expect("fits") + 1
        );
    }

    /// The credentials of provider `p` with a kept state, in publication order.
    async fn kept_ids(store: &dyn CredentialStore) -> Vec<String> {
        store
            .shared_states("p")
            .await
            .expect("read")
            .into_iter()
            .map(|r| r.id.to_string())
            .collect()
    }

    /// Stores credentials `a` and `b` of provider `p` (states are kept for held ones only).
    async fn holding_a_and_b(store: &MemoryStore) {
        for c in ["a", "b"] {
            let cred = oauth_core::Credential::new(c, "token", at(0)).expect("valid");
            store.save("p", &cred, None).await.expect("saved");
        }
    }

    /// Refuses every state of credential `bad` for good (`NotFound`), and everything while
    /// `down` (unavailable).
    #[derive(Debug, Default)]
    struct Refusing {
        inner: MemoryStore,
        down: AtomicBool,
        /// Publications never finish (a statement stuck in a partition).
        hang: AtomicBool,
    }

    #[async_trait::async_trait]
    impl CredentialStore for Refusing {
        async fn load_all(
            &self,
            p: &str,
        ) -> Result<Vec<oauth_store::Versioned<oauth_core::Credential>>, StoreError> {
            self.inner.load_all(p).await
        }
        async fn load(
            &self,
            p: &str,
            id: &CredentialId,
        ) -> Result<Option<oauth_store::Versioned<oauth_core::Credential>>, StoreError> {
            self.inner.load(p, id).await
        }
        async fn save(
            &self,
            p: &str,
            c: &oauth_core::Credential,
            expected: Option<u64>,
        ) -> Result<u64, StoreError> {
            self.inner.save(p, c, expected).await
        }
        async fn delete(
            &self,
            p: &str,
            id: &CredentialId,
            expected: Option<u64>,
        ) -> Result<(), StoreError> {
            self.inner.delete(p, id, expected).await
        }
        async fn versions(
            &self,
            p: &str,
        ) -> Result<std::collections::BTreeMap<CredentialId, u64>, StoreError> {
            self.inner.versions(p).await
        }
        async fn publish_state(
            &self,
            p: &str,
            id: &CredentialId,
            state: SharedState,
            version: Option<u64>,
        ) -> Result<(), StoreError> {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Io {
                    path: "/db".into(),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                });
            }
            if id.as_str() == "bad" {
                return Err(StoreError::NotFound {
                    provider: p.to_owned(),
                    id: id.clone(),
                });
            }
            self.inner.publish_state(p, id, state, version).await
        }
        async fn shared_states(
            &self,
            p: &str,
        ) -> Result<Vec<oauth_store::SharedStateRecord>, StoreError> {
            self.inner.shared_states(p).await
        }
    }

    #[tokio::test]
    async fn a_refused_decision_is_dropped_and_an_outage_keeps_the_rest_in_order() {
        let store = Arc::new(Refusing::default());
        holding_a_and_b(&store.inner).await;
        let sharing = Sharing::new(Arc::clone(&store) as Arc<dyn CredentialStore>, "p".into());
        store.down.store(true, Ordering::SeqCst);
        {
            let mut q = sharing.queue();
            q.items.push_back(state("a", SharedState::Disabled));
            q.items.push_back(state("bad", SharedState::Disabled));
            q.items.push_back(state("b", SharedState::Disabled));
        }
        assert!(!sharing.flush(at(0)).await, "kept while down");
        assert_eq!(sharing.queued(), 3);
        assert!(
            sharing.pending(&id("a"), "enablement"),
            "the first is back in front"
        );
        store.down.store(false, Ordering::SeqCst);
        assert!(sharing.flush(at(0)).await);
        assert_eq!(
            kept_ids(store.as_ref()).await,
            ["a", "b"],
            "the refused one did not hold back b"
        );
    }

    /// Review of the whole change: a flush dropped while sending (the maintenance task aborted,
    /// its runtime shut down) left the decision marked as being sent (so the store's state of it
    /// was skipped for good) and the sender role taken (so nothing was ever sent again).
    #[tokio::test]
    async fn a_flush_dropped_mid_send_keeps_the_decision_and_gives_the_role_back() {
        let store = Arc::new(Refusing::default());
        holding_a_and_b(&store.inner).await;
        let sharing = Sharing::new(Arc::clone(&store) as Arc<dyn CredentialStore>, "p".into());
        sharing
            .queue()
            .items
            .push_back(state("a", SharedState::Disabled));
        store.hang.store(true, Ordering::SeqCst);
        {
            let flush = std::pin::pin!(sharing.flush_unless_sending(at(0)));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(flush.poll(&mut cx).is_pending(), "stuck in the send");
            assert!(sharing.pending(&id("a"), "enablement"));
        } // dropped here, mid-send
        assert_eq!(sharing.queued(), 1, "the decision is back in the queue");
        store.hang.store(false, Ordering::SeqCst);
        assert!(
            sharing.flush_unless_sending(at(0)).await,
            "the role was given back"
        );
        assert_eq!(kept_ids(store.as_ref()).await, ["a"]);
        assert!(!sharing.pending(&id("a"), "enablement"));
    }

    /// The same for the spawned sender: a task dropped with its runtime before it ran.
    #[test]
    fn a_sender_task_dropped_with_its_runtime_gives_the_role_back() {
        let store = MemoryStore::new();
        let sharing = Arc::new(Sharing::new(Arc::new(store.clone()), "p".into()));
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let _in = rt.enter();
            sharing.share(state("a", SharedState::Disabled), at(0));
        } // the runtime goes before its task was polled
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            holding_a_and_b(&store).await;
            assert!(sharing.flush_unless_sending(at(0)).await);
            assert_eq!(kept_ids(&store).await, ["a"]);
        });
    }

    #[test]
    fn a_removed_credential_is_forgotten() {
        let sharing = Arc::new(Sharing::new(Arc::new(MemoryStore::new()), "p".into()));
        sharing.share(state("a", SharedState::Disabled), at(0));
        sharing.share(state("b", SharedState::Disabled), at(0));
        sharing.share(
            Outgoing::Cooldown {
                id: id("a"),
                until: at(60),
            },
            at(0),
        );
        sharing.forget(&id("a"));
        assert_eq!(sharing.queued(), 1);
        assert!(!sharing.pending(&id("a"), "enablement"));
        assert!(
            sharing.note_cooldown(&id("a"), at(60), at(0)),
            "its cooldown end too"
        );
    }

    #[tokio::test]
    async fn a_flush_sends_in_order_and_drops_cooldowns_that_ended() {
        let store = MemoryStore::new();
        holding_a_and_b(&store).await;
        let sharing = Arc::new(Sharing::new(Arc::new(store.clone()), "p".into()));
        {
            let mut q = sharing.queue();
            q.items.push_back(state("a", SharedState::Disabled));
            q.items.push_back(Outgoing::Cooldown {
                id: id("a"),
                until: at(5),
            });
            q.items.push_back(state("b", SharedState::Disabled));
        }
        assert!(sharing.flush(at(10)).await);
        assert_eq!(sharing.queued(), 0);
        assert_eq!(kept_ids(&store).await, ["a", "b"]);
    }
}
