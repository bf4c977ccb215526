//! The MinerRegistryActor: reads the miner set from a [`MinerSource`] (with retries) and classifies it
//! (docs/scheduler.md §3 steps 1–2, §4).

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;

use crate::messages::{CurrentBlock, GetMiners, MinerSnapshot, RefreshMiners};
use crate::ports::{MinerSource, RegistryRead};
use crate::registry::classify;

/// Decrypts an encrypted commitment's blob into a deployment id.
pub type Decrypt = Box<dyn Fn(&str) -> Result<String, String>>;

/// The current miner set.
pub struct MinerRegistryActor {
    source: Rc<dyn MinerSource>,
    decrypt: Option<Decrypt>,
    retry_pauses: Vec<Duration>,
    last: Option<MinerSnapshot>,
}

impl MinerRegistryActor {
    /// Reads from `source`; after a failed read it waits each of `retry_pauses` in turn and tries
    /// again. Without `decrypt` encrypted commitments are inactive.
    pub fn new(
        source: Rc<dyn MinerSource>,
        decrypt: Option<Decrypt>,
        retry_pauses: Vec<Duration>,
    ) -> Self {
        Self {
            source,
            decrypt,
            retry_pauses,
            last: None,
        }
    }
}

impl Actor for MinerRegistryActor {
    type Context = Context<Self>;
}

async fn read_with_retries(
    source: Rc<dyn MinerSource>,
    pauses: Vec<Duration>,
) -> Result<RegistryRead, String> {
    let mut last = match source.read().await {
        Ok(read) => return Ok(read),
        Err(e) => e,
    };
    for pause in pauses {
        tokio::time::sleep(pause).await;
        match source.read().await {
            Ok(read) => return Ok(read),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Handler<RefreshMiners> for MinerRegistryActor {
    type Result = ResponseActFuture<Self, Result<MinerSnapshot, String>>;

    fn handle(&mut self, _: RefreshMiners, _: &mut Context<Self>) -> Self::Result {
        let read = read_with_retries(self.source.clone(), self.retry_pauses.clone());
        Box::pin(read.into_actor(self).map(|read, act, _| {
            let read = read?;
            let decrypt = act
                .decrypt
                .as_deref()
                .map(|d| d as &dyn Fn(&str) -> Result<String, String>);
            let snapshot = MinerSnapshot {
                block: read.block,
                miners: read
                    .entries
                    .into_iter()
                    .map(|e| classify(e, decrypt))
                    .collect(),
            };
            act.last = Some(snapshot.clone());
            Ok(snapshot)
        }))
    }
}

impl Handler<GetMiners> for MinerRegistryActor {
    type Result = Option<MinerSnapshot>;

    fn handle(&mut self, _: GetMiners, _: &mut Context<Self>) -> Self::Result {
        self.last.clone()
    }
}

impl Handler<CurrentBlock> for MinerRegistryActor {
    type Result = ResponseFuture<Result<Option<i64>, String>>;

    fn handle(&mut self, _: CurrentBlock, _: &mut Context<Self>) -> Self::Result {
        let source = self.source.clone();
        Box::pin(async move { source.current_block().await })
    }
}
