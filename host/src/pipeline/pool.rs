//! The workers of a pipeline, as the consumer thread sees them: started
//! with the first assignment, given partitions (the one with the fewest
//! takes the next), told to let go of them, stopped with the pipeline. A
//! worker's loop is `super::worker`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;

use super::consumer::Consumer;
use super::delivery::Producer;
use super::failures::FailureSink;
use super::partition::{Control, Lane, Queue};
use super::refusals::{AloneProducer, RefusedRecords};
use super::worker::Worker;
use crate::metrics::Metrics;
use crate::plugin::Interrupt;

/// What the workers route with, shared with the rest of the pipeline.
pub(super) struct Shared {
    pub producer: Arc<Producer>,
    pub failures: Arc<dyn FailureSink>,
    pub metrics: Arc<Metrics>,
    /// Exactly-once mode: held (read) while a record's outputs are handed
    /// over, so that a commit never splits a record.
    pub gate: Option<Arc<std::sync::RwLock<()>>>,
    /// The producer that sends a refused output again alone.
    pub alone: Arc<AloneProducer>,
    /// Records whose outputs the broker refused in an aborted transaction:
    /// settled by the route's policy when they come again.
    pub refused: Arc<RefusedRecords>,
    /// The consumer, to pause and resume partitions' fetching.
    pub consumer: Weak<Consumer>,
}

/// What the consumer thread tells a worker.
pub(super) enum Command {
    /// Route this partition.
    Add(Lane),
    /// Forget the partition (released already).
    Remove(Arc<Control>),
}

/// Whether a worker is in a plugin call, and what ends it.
struct CallState {
    in_call: bool,
    interrupt: Interrupt,
}

/// The consumer thread's side of a worker.
pub(super) struct WorkerHandle {
    /// Where the worker's partitions' records come.
    pub(super) queue: Queue,
    pub(super) inbox: Mutex<Vec<Command>>,
    /// Whether `inbox` has something: the worker then takes it before it
    /// routes on.
    pub(super) commands: AtomicBool,
    call: Mutex<CallState>,
    /// Partitions placed on it.
    pub(super) load: AtomicUsize,
    /// Whether it must stop.
    pub(super) stop: AtomicBool,
    /// Whether its thread runs.
    pub(super) running: AtomicBool,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WorkerHandle {
    /// The worker's queue, for partitions to be forwarded to.
    pub(super) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Gives the worker a partition to route.
    pub(super) fn add(&self, lane: Lane) {
        self.load.fetch_add(1, Ordering::AcqRel);
        self.command(Command::Add(lane));
        self.queue.wake();
    }

    /// Tells the worker to forget a partition it no longer routes.
    pub(super) fn remove(&self, control: &Arc<Control>) {
        self.command(Command::Remove(control.clone()));
        self.queue.wake();
    }

    fn command(&self, command: Command) {
        let mut inbox = lock(&self.inbox);
        inbox.push(command);
        self.commands.store(true, Ordering::Release);
    }

    /// Whether the consumer thread placed or took off a partition that the
    /// worker has not seen yet.
    pub(super) fn commands_pending(&self) -> bool {
        self.commands.load(Ordering::Acquire)
    }

    /// Ends the plugin call in progress, if there is one (the instances
    /// it was made with are made again for the next call).
    pub(super) fn interrupt_call(&self) {
        let call = lock(&self.call);
        if call.in_call {
            call.interrupt.raise();
        }
    }

    /// Whether the worker's thread runs.
    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Runs `call` (a plugin call, or an instance's start, for a
    /// partition whose turn it is) as a call that
    /// [`interrupt_call`](Self::interrupt_call) may end, unless `stopped`
    /// says the partition must stop (checked once the call may be ended:
    /// a release cannot slip in between); gives its result (`None`: not
    /// made) and whether it was ended so.
    pub(super) fn calling<T>(
        &self,
        stopped: impl FnOnce() -> bool,
        call: impl FnOnce() -> T,
    ) -> (Option<T>, bool) {
        lock(&self.call).in_call = true;
        let result = (!stopped()).then(call);
        let mut state = lock(&self.call);
        state.in_call = false;
        (result, state.interrupt.is_raised())
    }

    /// The interrupt new instances are made with.
    pub(super) fn interrupt(&self) -> Interrupt {
        lock(&self.call).interrupt.clone()
    }

    /// After an interrupted call: a new interrupt for new instances.
    pub(super) fn renew_interrupt(&self) {
        lock(&self.call).interrupt = Interrupt::new();
    }
}

/// The workers of a pipeline.
pub(super) struct Workers {
    handles: Vec<Arc<WorkerHandle>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.handles.len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// Starts `count` workers reading queues of `consumer`'s.
    pub(super) fn start(
        count: usize,
        consumer: &Arc<Consumer>,
        shared: &Arc<Shared>,
    ) -> std::io::Result<Self> {
        let mut workers = Self {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count.max(1) {
            let queue = Queue::new(consumer).ok_or_else(|| {
                std::io::Error::other("librdkafka cannot make a queue for a worker")
            })?;
            let handle = Arc::new(WorkerHandle {
                queue,
                inbox: Mutex::default(),
                commands: AtomicBool::new(false),
                call: Mutex::new(CallState {
                    in_call: false,
                    interrupt: Interrupt::new(),
                }),
                load: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
                running: AtomicBool::new(true),
            });
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn({
                    let (handle, shared) = (handle.clone(), shared.clone());
                    // Topic handles stay on the thread that made them.
                    move || Worker::new(handle, shared).run()
                });
            match thread {
                Ok(thread) => {
                    workers.handles.push(handle);
                    workers.threads.push(thread);
                }
                Err(e) => {
                    workers.stop();
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// The worker a new partition goes to: the one with the fewest (of
    /// those still running).
    pub(super) fn place(&self) -> Option<Arc<WorkerHandle>> {
        self.handles
            .iter()
            .filter(|h| h.is_running())
            .min_by_key(|h| h.load.load(Ordering::Acquire))
            .cloned()
    }

    /// Stops every worker (a plugin call in progress ends now) and waits
    /// for them. Partitions still placed are dropped unfinished.
    pub(super) fn stop(&mut self) {
        for handle in &self.handles {
            handle.stop.store(true, Ordering::Release);
            lock(&handle.call).interrupt.raise();
            handle.queue.wake();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
        self.handles.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
