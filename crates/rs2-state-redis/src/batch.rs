//! Lock-and-read and write-and-release requests sent together: on a standalone server, the
//! transitions of many keys in flight at once (the keyed-concurrency operators, or several
//! pipelines sharing the store) go out as one script call, so a transition costs the server
//! a few key lookups instead of a script call of its own.
//!
//! A task owns the receiving end: it takes every request waiting (up to [`MAX_BATCH`]),
//! sends them as one [`scripts::BATCH`] call, hands each caller its reply, and repeats.
//! While a call is out, new requests queue up for the next one, so a lone caller pays one
//! channel hop and a busy store sends few, large calls. The task does not retry: a failed
//! call fails each of its requests, and each caller retries its own by its store's
//! [`RetryPolicy`](crate::RetryPolicy) (every request is safe to repeat).

use redis::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use std::sync::Arc;

use redis::aio::ConnectionLike;

use crate::scripts;

/// Most requests in one script call (each touches two keys).
const MAX_BATCH: usize = 512;
/// Most script calls out at once.
const CALLS_IN_FLIGHT: usize = 4;

/// One lock or write request.
pub(crate) struct Op {
    pub lock_key: String,
    pub value_key: String,
    pub kind: OpKind,
    pub token: String,
    /// The lease (lock) or the TTL (write; 0 for none), in milliseconds.
    pub ms: u64,
    pub value: Vec<u8>,
    /// How long a write's commit mark lives, in milliseconds.
    pub mark_ms: u64,
}

impl Op {
    /// Adds this request's keys and arguments to a [`scripts::BATCH`] call.
    pub fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .key(&self.lock_key)
            .key(&self.value_key)
            .arg(self.kind.code())
            .arg(&self.token)
            .arg(self.ms)
            .arg(&self.value)
            .arg(self.mark_ms);
    }
}

/// What an [`Op`] does (the script's one-letter codes).
#[derive(Clone, Copy)]
pub(crate) enum OpKind {
    /// Take the lock.
    Lock,
    /// Take the lock and read the value.
    LockRead,
    /// Write the value and release.
    Set,
    /// Delete the value and release.
    Delete,
    /// Release without writing.
    Keep,
}

impl OpKind {
    fn code(self) -> &'static str {
        match self {
            OpKind::Lock => "L",
            OpKind::LockRead => "R",
            OpKind::Set => "S",
            OpKind::Delete => "D",
            OpKind::Keep => "K",
        }
    }
}

/// A request's reply: the script's status (1: done; 0: another holder has the lock, or this
/// write's lock was lost) and its datum (the value read, or the lock's milliseconds left), or
/// the error the call ended with.
pub(crate) type Reply = Result<(i64, Value), redis::RedisError>;

/// Sends one request as its own [`scripts::BATCH`] call (a cluster: requests of different
/// slots cannot share a script).
pub(crate) async fn call_one<C: ConnectionLike>(conn: &mut C, op: &Op) -> Reply {
    let mut invocation = scripts::BATCH.prepare_invoke();
    op.add_to(&mut invocation);
    let values: Vec<Value> = invocation.invoke_async(conn).await?;
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(Value::Int(status)), Some(datum)) => Ok((status, datum)),
        _ => Err(wrong_reply(1)),
    }
}

fn wrong_reply(requests: usize) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "the lock script returned the wrong replies",
        format!("for {requests} requests"),
    ))
}

/// The sending end; requests are answered by the task [`Batcher::start`] spawned.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<(Arc<Op>, oneshot::Sender<Reply>)>,
}

impl Batcher {
    /// Spawns the task sending batches on `conn` (on the current tokio runtime); it ends when
    /// every `Batcher` clone is dropped.
    pub fn start<C: ConnectionLike + Clone + Send + 'static>(conn: C) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx));
        Self { tx }
    }

    /// Sends `op` with the next batch and waits for its reply.
    pub async fn call(&self, op: Arc<Op>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "the store's batching task has stopped (its tokio runtime shut down?)",
            ))
        };
        self.tx.send((op, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run<C: ConnectionLike + Clone + Send + 'static>(
    conn: C,
    mut rx: mpsc::UnboundedReceiver<(Arc<Op>, oneshot::Sender<Reply>)>,
) {
    // A few calls out at once keep the server busy while replies travel; requests arriving
    // while every slot is taken wait, and go out together in the next call.
    let slots = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    while let Some((op, reply)) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut ops = vec![op];
        let mut replies = vec![reply];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((op, reply)) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let mut conn = conn.clone();
        tokio::spawn(async move {
            answer(&mut conn, &ops, replies).await;
            drop(slot);
        });
    }
}

/// Sends `ops` as one call and hands each its reply.
async fn answer<C: ConnectionLike>(
    conn: &mut C,
    ops: &[Arc<Op>],
    replies: Vec<oneshot::Sender<Reply>>,
) {
    let mut invocation = scripts::BATCH.prepare_invoke();
    for op in ops {
        op.add_to(&mut invocation);
    }
    let result: Result<Vec<Value>, _> = invocation.invoke_async(conn).await;
    match result {
        Ok(values) if values.len() == 2 * ops.len() => {
            let mut values = values.into_iter();
            for reply in replies {
                let status = match values.next() {
                    Some(Value::Int(n)) => n,
                    _ => -1,
                };
                let datum = values.next().unwrap_or(Value::Nil);
                // A caller that stopped waiting is not an error here.
                let _ = reply.send(Ok((status, datum)));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(wrong_reply(ops.len())));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
