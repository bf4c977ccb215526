//! The core's [`MinerSource`] port on a miners file and on the chain.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use kinitro_actors::ports::{MinerSource, PortFuture, RegistryRead, RegistrySource};
use tokio::sync::Mutex;

use super::miners_file;
use crate::chain::client::ChainSource;

/// A TOML or JSON miners file, re-read on every registry read.
pub struct FileSource(pub PathBuf);

impl MinerSource for FileSource {
    fn kind(&self) -> RegistrySource {
        RegistrySource::File
    }

    fn read(&self) -> PortFuture<'_, Result<RegistryRead, String>> {
        Box::pin(async move {
            Ok(RegistryRead {
                block: None,
                entries: miners_file::read(&self.0)?,
            })
        })
    }

    /// The clock part of the synthetic block (docs/scheduler.md §2, §4.4).
    fn current_block(&self) -> PortFuture<'_, Result<Option<i64>, String>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        Box::pin(std::future::ready(Ok(Some(now / 12))))
    }
}

/// The chain, read at the finalized block. The heartbeat has its own connection: a slow registry
/// read must never delay it.
pub struct ChainMiners {
    /// Registry reads of the cycles.
    pub cycles: Mutex<ChainSource>,
    /// Finalized-block reads of the heartbeat.
    pub heartbeat: Mutex<ChainSource>,
}

impl MinerSource for ChainMiners {
    fn kind(&self) -> RegistrySource {
        RegistrySource::Chain
    }

    fn read(&self) -> PortFuture<'_, Result<RegistryRead, String>> {
        Box::pin(async move {
            let snap = self.cycles.lock().await.snapshot().await?;
            Ok(RegistryRead {
                block: Some(snap.block as i64),
                entries: snap.entries,
            })
        })
    }

    fn current_block(&self) -> PortFuture<'_, Result<Option<i64>, String>> {
        Box::pin(async move {
            let block = self.heartbeat.lock().await.finalized_block().await?;
            Ok(Some(block as i64))
        })
    }
}
