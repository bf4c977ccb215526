//! Claim merging for `POST /v1/tasks/fetch`: concurrent fetches with the same filter are claimed
//! together in one statement ([`tasks::claim_many`]), at most [`MAX_STATEMENTS`] statements at a
//! time. Each request still gets its tasks only after the statement that claimed them committed
//! (docs/database.md §6.1), and SKIP LOCKED still keeps claimers apart; fewer, larger claims cost
//! PostgreSQL less per task than many small concurrent ones (each concurrent claimer also has to
//! step over the rows the others hold locked).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::db::tasks::{self, ClaimFilter, ClaimRequest, ClaimedTask};
use crate::db::{DbError, DbPool};

/// Claim statements running at once.
const MAX_STATEMENTS: usize = 2;
/// Requests merged into one statement.
const MAX_MERGED: usize = 64;

type Reply = oneshot::Sender<Result<Vec<ClaimedTask>, String>>;

struct Waiting {
    request: ClaimRequest,
    filter: ClaimFilter,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    runners: usize,
}

/// The fetch requests waiting for a claim, shared by the API's workers.
#[derive(Clone, Default)]
pub struct ClaimQueue {
    queue: Arc<Mutex<Queue>>,
}

impl ClaimQueue {
    /// Claims up to `request.batch_size` tasks; the error is the database failure's text.
    pub async fn claim(
        &self,
        pool: &DbPool,
        request: ClaimRequest,
        filter: ClaimFilter,
    ) -> Result<Vec<ClaimedTask>, String> {
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut q = self.queue.lock().unwrap();
            q.waiting.push_back(Waiting {
                request,
                filter,
                reply,
            });
            let start = q.runners < MAX_STATEMENTS;
            if start {
                q.runners += 1;
            }
            start
        };
        if start_runner {
            actix_web::rt::spawn(run(self.queue.clone(), pool.clone()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the claim was dropped".into()))
    }
}

/// The next group: the oldest waiting request and the following ones with the same filter.
fn next_group(q: &mut Queue) -> Vec<Waiting> {
    let Some(first) = q.waiting.pop_front() else {
        return Vec::new();
    };
    let mut group = vec![first];
    let mut i = 0;
    while group.len() < MAX_MERGED && i < q.waiting.len() {
        if q.waiting[i].filter == group[0].filter {
            group.extend(q.waiting.remove(i));
        } else {
            i += 1;
        }
    }
    group
}

/// Claims groups until nothing waits.
async fn run(queue: Arc<Mutex<Queue>>, pool: DbPool) {
    loop {
        let group = {
            let mut q = queue.lock().unwrap();
            let group = next_group(&mut q);
            if group.is_empty() {
                q.runners -= 1;
                return;
            }
            group
        };
        let requests: Vec<ClaimRequest> = group.iter().map(|w| w.request.clone()).collect();
        let claimed = match pool.get().await {
            Ok(mut conn) => tasks::claim_many(&mut conn, &requests, &group[0].filter).await,
            Err(e) => Err(DbError::Other(format!("database unavailable: {e}"))),
        };
        match claimed {
            Ok(parts) => {
                for (w, tasks) in group.into_iter().zip(parts) {
                    let _ = w.reply.send(Ok(tasks));
                }
            }
            Err(e) => {
                for w in group {
                    let _ = w.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
