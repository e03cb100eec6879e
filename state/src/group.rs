//! Group commit across callers: commits that are ready at the same moment share one
//! durable write.
//!
//! **Why.** A run's executor already puts every transition of one turn into one commit.
//! Concurrent runs each committed on their own, one fsync after another under the store's
//! `turn` lock, so sixty-four runs in flight cost sixty-four disk writes where one would do.
//!
//! **How.** [`Store::commit`] and [`Store::commit_async`] queue their ops (encoded by the
//! caller, outside any lock) and then:
//!
//! - If no commit is being written, the caller *leads*: it takes the queue (its own entry)
//!   and writes it at once, on its own thread, as a lone commit always did. A chain of
//!   tasks pays nothing for the queue: no thread hand-off, no extra wait.
//! - Otherwise it waits (a sync caller on a condition variable, an async one as a pending
//!   future, which frees its worker thread for other runs). Whatever queues while a batch is
//!   written goes into the next batch, written by the store's committer thread, which takes
//!   the whole queue each time until it is empty, then goes idle. Leadership goes to a
//!   thread that always runs, never to a waiter: a waiting async task needs a worker to
//!   be polled, and workers may all be blocked in sync commits.
//! - Except while commits arrive together (one arrived during a batch's write in the last
//!   20 ms): then an async commit that finds no batch being written *hands off* to the
//!   committer thread instead of leading, so the async worker is never blocked in the disk
//!   write while other runs could be preparing the next batch (`Role::HandOff`). A chain
//!   never overlaps, so it still writes on its own thread; a backfill of 64 runs at once
//!   keeps both workers running runs while the committer waits on the disk.
//!
//! A batch is one `turn`: the disk-space check, one replica change, the journal pieces of
//! all its entries (an entry is never split across pieces unless it is larger than a
//! piece on its own, so each entry stays atomic), the blob sync and one flush. Every entry
//! of the batch completes only after that flush: nothing is reported before its commit is
//! on disk, and a failed batch fails each of its entries.
//!
//! The committer holds the store only through a `Weak` while idle, so dropping the store
//! closes sled as before; the thread ends with the store.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::journal::Op;
use crate::{Core, Result, StateError, Store};

/// The queue of commits waiting for a batch, shared by the store and its committer.
#[derive(Default)]
pub(crate) struct Group {
    queue: Mutex<Queue>,
    /// Wakes the committer thread: there is a batch for it, or the store closed.
    work: Condvar,
    /// The thread that wrote the last batch (tests ask who did).
    #[cfg(test)]
    pub(crate) writer: Mutex<Option<std::thread::ThreadId>>,
}

struct Queue {
    entries: Vec<Entry>,
    leader: Leader,
    /// The committer thread was started.
    thread: bool,
    /// The store was dropped: the committer ends.
    closed: bool,
    /// When a commit last arrived while a batch was being written: commits are arriving
    /// together, and for a while an async commit hands its batch to the committer
    /// thread instead of writing it on its worker (see [`Role::HandOff`]).
    overlapped_at: Option<Instant>,
    /// How long after an overlap that lasts ([`HAND_OFF_FOR`]; tests change it).
    hand_off_for: Duration,
}

/// How long commits count as arriving together after two last overlapped. Within a burst
/// (a backfill, a daemon's busy minute) they overlap every few hundred microseconds, so
/// this bridges every gap; a chain of tasks never overlaps and never hands off.
const HAND_OFF_FOR: Duration = Duration::from_millis(20);

impl Default for Queue {
    fn default() -> Self {
        Queue {
            entries: Vec::new(),
            leader: Leader::None,
            thread: false,
            closed: false,
            overlapped_at: None,
            hand_off_for: HAND_OFF_FOR,
        }
    }
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Leader {
    /// No batch is being written: the next commit writes its own at once.
    #[default]
    None,
    /// A caller is writing a batch on its own thread.
    Inline,
    /// The committer thread writes batches until the queue is empty.
    Thread,
}

struct Entry {
    ops: Vec<Op>,
    done: Arc<Done>,
}

/// Where a queued commit's result arrives.
#[derive(Default)]
struct Done {
    slot: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Default)]
struct Slot {
    result: Option<Result<()>>,
    waker: Option<Waker>,
    /// A thread sleeps on `ready` (a lone leader's own commit has none to wake: no
    /// futex call on a chain's path).
    sleeping: bool,
}

impl Done {
    fn finish(&self, result: Result<()>) {
        let (waker, sleeping) = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.result = Some(result);
            (slot.waker.take(), slot.sleeping)
        };
        if sleeping {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self) -> Result<()> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = slot.result.take() {
                return r;
            }
            slot.sleeping = true;
            slot = self
                .ready
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn poll(&self, waker: &Waker) -> Poll<Result<()>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    slot.waker = Some(waker.clone());
                }
                Poll::Pending
            }
        }
    }
}

/// What a caller does once its commit is queued.
#[derive(PartialEq, Eq)]
enum Role {
    /// Write the queue now, on this thread.
    Lead,
    /// Wake the committer thread, which now leads: an async commit while commits
    /// arrive together. Written on its worker, it would block that worker (one of two on
    /// this machine) for the disk write, and the runs queued on it with it, so fewer
    /// commits would be ready to share the next write. Its durability is the same: it
    /// completes only when its batch is on disk.
    HandOff,
    /// Wait: a batch is being written, and the next one will hold this commit.
    Follow,
}

impl Group {
    /// Queues `ops`; returns where its result arrives and what the caller does now.
    /// `async_caller`: the caller is a future on an async worker, which may hand its batch
    /// to the committer thread rather than block the worker in the disk write.
    fn enqueue(&self, ops: Vec<Op>, async_caller: bool) -> (Arc<Done>, Role) {
        let done = Arc::new(Done::default());
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.entries.push(Entry {
            ops,
            done: done.clone(),
        });
        let role = match q.leader {
            Leader::None
                if async_caller
                    && q.thread
                    && q.overlapped_at
                        .is_some_and(|t| t.elapsed() < q.hand_off_for) =>
            {
                q.leader = Leader::Thread;
                Role::HandOff
            }
            Leader::None => {
                q.leader = Leader::Inline;
                Role::Lead
            }
            _ => {
                q.overlapped_at = Some(Instant::now());
                Role::Follow
            }
        };
        (done, role)
    }

    /// How long commits count as arriving together after an overlap (tests).
    #[cfg(test)]
    pub(crate) fn set_hand_off_for(&self, d: Duration) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hand_off_for = d;
    }

    /// Commits queued and not yet taken into a batch (tests wait on it).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// A batch is being written (tests wait on it).
    #[cfg(test)]
    pub(crate) fn leading(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .leader
            != Leader::None
    }

    /// Ends the committer thread (the store is being dropped).
    pub(crate) fn close(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.work.notify_all();
    }
}

impl Core {
    /// Queues `ops` and returns once they are durable: as the leader, or as a follower.
    pub(crate) fn commit_ops(self: &Arc<Self>, ops: Vec<Op>) -> Result<()> {
        let (done, role) = self.group.enqueue(ops, false);
        if role == Role::Lead {
            self.lead_inline();
        }
        done.wait()
    }

    /// Writes the queue as it is now (the leader's own entry, at least), then passes
    /// leadership to the committer thread if more queued meanwhile.
    fn lead_inline(self: &Arc<Self>) {
        let batch = std::mem::take(&mut self.queue().entries);
        self.write_batch(batch);
        let mut q = self.queue();
        if q.entries.is_empty() {
            q.leader = Leader::None;
            return;
        }
        q.leader = Leader::Thread;
        if !q.thread {
            let group = self.group.clone();
            let core = Arc::downgrade(self);
            q.thread = std::thread::Builder::new()
                .name("state-commit".into())
                .spawn(move || committer(group, core))
                .is_ok();
            if !q.thread {
                // No thread to be had: this caller writes what is queued, until none is.
                loop {
                    if q.entries.is_empty() {
                        q.leader = Leader::None;
                        return;
                    }
                    let batch = std::mem::take(&mut q.entries);
                    drop(q);
                    self.write_batch(batch);
                    q = self.queue();
                }
            }
        }
        drop(q);
        self.group.work.notify_all();
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.group
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `batch` as one durable write and completes each of its entries.
    fn write_batch(&self, batch: Vec<Entry>) {
        #[cfg(test)]
        {
            *self
                .group
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(std::thread::current().id());
        }
        let mut ops = Vec::with_capacity(batch.iter().map(|e| e.ops.len()).sum());
        let mut units = Vec::with_capacity(batch.len());
        let mut dones = Vec::with_capacity(batch.len());
        for mut e in batch {
            let start = ops.len();
            ops.append(&mut e.ops);
            units.push(start..ops.len());
            dones.push(e.done);
        }
        let result = self.write_ops(&ops, &units);
        {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(()) => *failure = None,
                Err(e) => *failure = Some(e.to_string()),
            }
        }
        self.commits
            .fetch_add(dones.len() as u64, std::sync::atomic::Ordering::Release);
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        for done in dones {
            done.finish(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(duplicate(e)),
            });
        }
    }
}

/// The committer thread: writes batches while it leads, sleeps otherwise.
fn committer(group: Arc<Group>, core: Weak<Core>) {
    loop {
        let batch = {
            let mut q = group.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if q.leader == Leader::Thread {
                    if q.entries.is_empty() {
                        q.leader = Leader::None;
                    } else {
                        break std::mem::take(&mut q.entries);
                    }
                }
                if q.closed {
                    return;
                }
                q = group.work.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        match core.upgrade() {
            Some(core) => core.write_batch(batch),
            // Cannot happen while anyone waits (they borrow the store); answer anyway.
            None => {
                for e in batch {
                    e.done.finish(Err(StateError::Io {
                        dir: Default::default(),
                        source: std::io::Error::other("the state store was closed"),
                    }));
                }
            }
        }
    }
}

/// The same error again, for each entry of a failed batch (`StateError` holds I/O errors,
/// which are not `Clone`).
fn duplicate(e: &StateError) -> StateError {
    let io = |s: &std::io::Error| std::io::Error::new(s.kind(), s.to_string());
    match e {
        StateError::Locked { dir, holder } => StateError::Locked {
            dir: dir.clone(),
            holder: holder.clone(),
        },
        StateError::NotADirectory { dir } => StateError::NotADirectory { dir: dir.clone() },
        StateError::DiskFull {
            dir,
            free_mb,
            need_mb,
        } => StateError::DiskFull {
            dir: dir.clone(),
            free_mb: *free_mb,
            need_mb: *need_mb,
        },
        StateError::Damaged { dir, detail } => StateError::Damaged {
            dir: dir.clone(),
            detail: detail.clone(),
        },
        StateError::ReadOnly { dir, why } => StateError::ReadOnly {
            dir: dir.clone(),
            why: why.clone(),
        },
        StateError::Open { dir, source } => StateError::Open {
            dir: dir.clone(),
            source: io(source),
        },
        StateError::Io { dir, source } => StateError::Io {
            dir: dir.clone(),
            source: io(source),
        },
        StateError::Db { dir, source } => StateError::Db {
            dir: dir.clone(),
            source: source.clone(),
        },
        StateError::TooNew { dir, found } => StateError::TooNew {
            dir: dir.clone(),
            found: *found,
        },
        StateError::Corrupt { dir, key, reason } => StateError::Corrupt {
            dir: dir.clone(),
            key: key.clone(),
            reason: reason.clone(),
        },
    }
}

/// [`Store::commit_async`]'s future: queues its ops when first polled, and is ready once
/// they are durable. Dropped before then, its ops are still committed.
pub struct Commit<'a> {
    store: &'a Store,
    state: State,
}

enum State {
    Start(Result<Vec<Op>>),
    Queued(Arc<Done>),
    Done,
}

impl<'a> Commit<'a> {
    pub(crate) fn new(store: &'a Store, ops: Result<Vec<Op>>) -> Self {
        Commit {
            store,
            state: State::Start(ops),
        }
    }
}

impl std::future::Future for Commit<'_> {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<()>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Start(Err(e)) => return Poll::Ready(Err(e)),
                State::Start(Ok(ops)) => {
                    let core = this.store.core();
                    let (done, role) = core.group.enqueue(ops, true);
                    match role {
                        // Written here and now, as a lone commit always was.
                        Role::Lead => core.lead_inline(),
                        Role::HandOff => core.group.work.notify_all(),
                        Role::Follow => {}
                    }
                    this.state = State::Queued(done);
                }
                State::Queued(done) => {
                    let polled = done.poll(cx.waker());
                    if polled.is_pending() {
                        this.state = State::Queued(done);
                    }
                    return polled;
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}
