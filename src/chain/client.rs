//! Reading the registry from the chain (docs/scheduler.md §4.1 and §9): subxt's dynamic API over
//! the legacy RPC backend, at the finalized block, with every operation under a timeout and the
//! client rebuilt after any error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kinitro_actors::registry::MinerEntry;
use subxt::backend::LegacyBackend;
use subxt::dynamic;
use subxt::ext::scale_value::{self, At, Composite, Primitive, ValueDef};
use subxt::rpcs::RpcClient;
use subxt::utils::AccountId32;
use subxt::{OnlineClient, SubstrateConfig};

use super::registration;

/// The client type: Bittensor uses Substrate's default configuration.
pub type ChainClient = OnlineClient<SubstrateConfig>;

/// Builds a client over the legacy backend from an RPC client (also used by tests with a fake RPC).
pub async fn client_from_rpc(rpc: RpcClient) -> Result<ChainClient, String> {
    let backend = LegacyBackend::<SubstrateConfig>::builder().build(rpc);
    OnlineClient::from_backend(Arc::new(backend))
        .await
        .map_err(|e| e.to_string())
}

/// One registry snapshot at a finalized block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Finalized block number.
    pub block: u64,
    /// Every registered uid, ascending, with its commitment if any.
    pub entries: Vec<MinerEntry>,
    /// `SubnetworkN`, for the sanity check.
    pub subnetwork_n: u16,
}

/// The chain `MinerSource` of one subnet.
pub struct ChainSource {
    url: String,
    netuid: u16,
    timeout: Duration,
    client: Option<ChainClient>,
}

impl ChainSource {
    /// A source for `network` (name or ws(s) URL) and `netuid`; connects on first use.
    pub fn new(network: &str, netuid: u16, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            url: registration::network_url(network)?,
            netuid,
            timeout,
            client: None,
        })
    }

    /// A source over an existing client (tests).
    pub fn with_client(client: ChainClient, netuid: u16, timeout: Duration) -> Self {
        Self {
            url: String::new(),
            netuid,
            timeout,
            client: Some(client),
        }
    }

    async fn client(&mut self) -> Result<ChainClient, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        // The "insecure" constructor accepts ws:// for any host; wss:// still uses TLS.
        let rpc = RpcClient::from_insecure_url(&self.url)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        let c = client_from_rpc(rpc).await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn timed<T>(
        &mut self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let out = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{what} timed out after {}s",
                self.timeout.as_secs_f64()
            )),
        };
        if out.is_err() && !self.url.is_empty() {
            self.client = None; // rebuilt on next use
        }
        out
    }

    /// The finalized block number (heartbeat).
    pub async fn finalized_block(&mut self) -> Result<u64, String> {
        let client = self.client().await?;
        self.timed("reading the finalized block", async move {
            Ok(client
                .at_current_block()
                .await
                .map_err(|e| e.to_string())?
                .block_number())
        })
        .await
    }

    /// The commitment text of one hotkey at the finalized block, if any (docs/scheduler.md §10.2).
    pub async fn commitment_of(&mut self, hotkey: &str) -> Result<Option<String>, String> {
        let account: AccountId32 = hotkey
            .parse()
            .map_err(|_| format!("invalid SS58 address: {hotkey}"))?;
        let client = self.client().await?;
        let netuid = self.netuid;
        self.timed("reading a commitment", async move {
            let at = client.at_current_block().await.map_err(|e| e.to_string())?;
            let addr = dynamic::storage::<(u16, AccountId32), scale_value::Value>(
                "Commitments",
                "CommitmentOf",
            );
            let Some(value) = at
                .storage()
                .try_fetch(addr, (netuid, account))
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let reg = value
                .decode_as::<scale_value::Value>()
                .ok()
                .and_then(|v| registration_from_value(&v))
                .map_or_else(|| registration::decode(value.bytes()), Ok)?;
            Ok(reg.commitment)
        })
        .await
    }

    /// The registry at the finalized block (docs/scheduler.md §4.1).
    pub async fn snapshot(&mut self) -> Result<Snapshot, String> {
        let client = self.client().await?;
        let netuid = self.netuid;
        self.timed("reading the registry", read_snapshot(client, netuid))
            .await
    }
}

async fn read_snapshot(client: ChainClient, netuid: u16) -> Result<Snapshot, String> {
    let e = |e: subxt::Error| e.to_string();
    let at = client.at_current_block().await.map_err(|x| x.to_string())?;
    let storage = at.storage();

    let keys = dynamic::storage::<(u16, u16), AccountId32>("SubtensorModule", "Keys");
    let mut hotkeys: BTreeMap<u16, AccountId32> = BTreeMap::new();
    let mut iter = storage
        .iter(keys, (netuid,))
        .await
        .map_err(|x| e(x.into()))?;
    while let Some(kv) = iter.next().await {
        let kv = kv.map_err(|x| e(x.into()))?;
        let uid = kv
            .key()
            .map_err(|x| x.to_string())?
            .part(1)
            .and_then(|p| p.decode_as::<u16>().ok().flatten())
            .ok_or("a Keys entry without a decodable uid")?;
        hotkeys.insert(uid, kv.value().decode().map_err(|x| x.to_string())?);
    }

    let commitments =
        dynamic::storage::<(u16, AccountId32), scale_value::Value>("Commitments", "CommitmentOf");
    let mut by_account: BTreeMap<[u8; 32], registration::Registration> = BTreeMap::new();
    let mut iter = storage
        .iter(commitments, (netuid,))
        .await
        .map_err(|x| e(x.into()))?;
    while let Some(kv) = iter.next().await {
        let kv = kv.map_err(|x| e(x.into()))?;
        let Some(account) = kv
            .key()
            .ok()
            .and_then(|k| k.part(1))
            .and_then(|p| p.decode_as::<AccountId32>().ok().flatten())
        else {
            continue;
        };
        let reg = kv
            .value()
            .decode_as::<scale_value::Value>()
            .ok()
            .and_then(|v| registration_from_value(&v))
            .map_or_else(|| registration::decode(kv.value().bytes()), Ok)?;
        by_account.insert(account.0, reg);
    }

    let n = dynamic::storage::<(u16,), u16>("SubtensorModule", "SubnetworkN");
    let subnetwork_n = storage
        .fetch(n, (netuid,))
        .await
        .map_err(|x| e(x.into()))?
        .decode()
        .map_err(|x| x.to_string())?;
    if usize::from(subnetwork_n) != hotkeys.len() {
        tracing::warn!(
            subnetwork_n,
            keys = hotkeys.len(),
            netuid,
            "SubnetworkN differs from the number of Keys entries"
        );
    }
    let entries = hotkeys
        .into_iter()
        .map(|(uid, account)| {
            let reg = by_account.get(&account.0);
            MinerEntry {
                uid,
                hotkey: account.to_string(),
                commitment: reg.and_then(|r| r.commitment.clone()),
                endpoint_override: None,
                commit_block: reg.map(|r| u64::from(r.block)),
                repo: None,
                revision: None,
            }
        })
        .collect();
    Ok(Snapshot {
        block: at.block_number(),
        entries,
        subnetwork_n,
    })
}

/// Reads `block` and the first field of `info.fields` from a metadata-decoded `Registration`.
pub fn registration_from_value<C: Clone>(
    v: &scale_value::Value<C>,
) -> Option<registration::Registration> {
    let block = match &v.at("block")?.value {
        ValueDef::Primitive(Primitive::U128(b)) => u32::try_from(*b).ok()?,
        _ => return None,
    };
    // A BoundedVec may decode as a one-field wrapper around the sequence: unwrap it.
    let mut fields = v.at("info")?.at("fields")?;
    while let ValueDef::Composite(Composite::Unnamed(items)) = &fields.value {
        match items.as_slice() {
            [only] if matches!(only.value, ValueDef::Composite(_)) && !is_variant_seq(items) => {
                fields = only
            }
            _ => break,
        }
    }
    let ValueDef::Composite(Composite::Unnamed(items)) = &fields.value else {
        return None;
    };
    let commitment = items.first().and_then(|first| match &first.value {
        ValueDef::Variant(var)
            if var.name.starts_with("Raw") && var.name[3..].parse::<u8>().is_ok() =>
        {
            Some(registration::lossy_drop(&bytes_of(&var.values)?))
        }
        _ => None,
    });
    Some(registration::Registration { block, commitment })
}

fn is_variant_seq<C>(items: &[scale_value::Value<C>]) -> bool {
    items
        .iter()
        .any(|i| matches!(i.value, ValueDef::Variant(_)))
}

/// The bytes of a `[u8; n]` held by a variant (possibly wrapped in one more composite).
fn bytes_of<C>(c: &Composite<C>) -> Option<Vec<u8>> {
    let vals: Vec<&scale_value::Value<C>> = c.values().collect();
    let flat: Vec<&scale_value::Value<C>> = match vals.as_slice() {
        [one] => match &one.value {
            ValueDef::Composite(inner) => inner.values().collect(),
            _ => vals.clone(),
        },
        _ => vals.clone(),
    };
    flat.iter()
        .map(|v| match v.value {
            ValueDef::Primitive(Primitive::U128(b)) => u8::try_from(b).ok(),
            _ => None,
        })
        .collect()
}
