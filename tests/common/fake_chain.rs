//! A fake subtensor for tests (docs/scheduler.md §9.3): self-built V15 metadata holding only the
//! items kinitro reads, raw storage built with independently computed keys, and the RPC methods
//! subxt's legacy backend issues. Served in-process through subxt-rpcs' `MockRpcClient`, or over a
//! loopback WebSocket (jsonrpsee) for the binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use frame_metadata::v15::{
    CustomMetadata, ExtrinsicMetadata, OuterEnums, PalletMetadata, PalletStorageMetadata,
    RuntimeMetadataV15, StorageEntryMetadata, StorageEntryModifier, StorageEntryType,
    StorageHasher,
};
use frame_metadata::RuntimeMetadataPrefixed;
use parity_scale_codec::{Compact, Encode};
use scale_info::{meta_type, TypeInfo};
use serde_json::{json, Value};
use sp_crypto_hashing::{twox_128, twox_64};

#[derive(TypeInfo)]
struct AccountId32([u8; 32]);

#[derive(TypeInfo)]
struct BoundedVec<T>(Vec<T>);

#[derive(TypeInfo, Encode)]
#[allow(clippy::large_enum_variant)]
enum Data {
    #[codec(index = 0)]
    None,
    #[codec(index = 1)]
    Raw0([u8; 0]),
    #[codec(index = 2)]
    Raw1([u8; 1]),
    #[codec(index = 3)]
    Raw2([u8; 2]),
    #[codec(index = 4)]
    Raw3([u8; 3]),
    #[codec(index = 5)]
    Raw4([u8; 4]),
    #[codec(index = 6)]
    Raw5([u8; 5]),
    #[codec(index = 7)]
    Raw6([u8; 6]),
    #[codec(index = 8)]
    Raw7([u8; 7]),
    #[codec(index = 9)]
    Raw8([u8; 8]),
    #[codec(index = 10)]
    Raw9([u8; 9]),
    #[codec(index = 11)]
    Raw10([u8; 10]),
    #[codec(index = 12)]
    Raw11([u8; 11]),
    #[codec(index = 13)]
    Raw12([u8; 12]),
    #[codec(index = 14)]
    Raw13([u8; 13]),
    #[codec(index = 15)]
    Raw14([u8; 14]),
    #[codec(index = 16)]
    Raw15([u8; 15]),
    #[codec(index = 17)]
    Raw16([u8; 16]),
    #[codec(index = 18)]
    Raw17([u8; 17]),
    #[codec(index = 19)]
    Raw18([u8; 18]),
    #[codec(index = 20)]
    Raw19([u8; 19]),
    #[codec(index = 21)]
    Raw20([u8; 20]),
    #[codec(index = 22)]
    Raw21([u8; 21]),
    #[codec(index = 23)]
    Raw22([u8; 22]),
    #[codec(index = 24)]
    Raw23([u8; 23]),
    #[codec(index = 25)]
    Raw24([u8; 24]),
    #[codec(index = 26)]
    Raw25([u8; 25]),
    #[codec(index = 27)]
    Raw26([u8; 26]),
    #[codec(index = 28)]
    Raw27([u8; 27]),
    #[codec(index = 29)]
    Raw28([u8; 28]),
    #[codec(index = 30)]
    Raw29([u8; 29]),
    #[codec(index = 31)]
    Raw30([u8; 30]),
    #[codec(index = 32)]
    Raw31([u8; 31]),
    #[codec(index = 33)]
    Raw32([u8; 32]),
    #[codec(index = 34)]
    Raw33([u8; 33]),
    #[codec(index = 35)]
    Raw34([u8; 34]),
    #[codec(index = 36)]
    Raw35([u8; 35]),
    #[codec(index = 37)]
    Raw36([u8; 36]),
    #[codec(index = 38)]
    Raw37([u8; 37]),
    #[codec(index = 39)]
    Raw38([u8; 38]),
    #[codec(index = 40)]
    Raw39([u8; 39]),
    #[codec(index = 41)]
    Raw40([u8; 40]),
    #[codec(index = 42)]
    Raw41([u8; 41]),
    #[codec(index = 43)]
    Raw42([u8; 42]),
    #[codec(index = 44)]
    Raw43([u8; 43]),
    #[codec(index = 45)]
    Raw44([u8; 44]),
    #[codec(index = 46)]
    Raw45([u8; 45]),
    #[codec(index = 47)]
    Raw46([u8; 46]),
    #[codec(index = 48)]
    Raw47([u8; 47]),
    #[codec(index = 49)]
    Raw48([u8; 48]),
    #[codec(index = 50)]
    Raw49([u8; 49]),
    #[codec(index = 51)]
    Raw50([u8; 50]),
    #[codec(index = 52)]
    Raw51([u8; 51]),
    #[codec(index = 53)]
    Raw52([u8; 52]),
    #[codec(index = 54)]
    Raw53([u8; 53]),
    #[codec(index = 55)]
    Raw54([u8; 54]),
    #[codec(index = 56)]
    Raw55([u8; 55]),
    #[codec(index = 57)]
    Raw56([u8; 56]),
    #[codec(index = 58)]
    Raw57([u8; 57]),
    #[codec(index = 59)]
    Raw58([u8; 58]),
    #[codec(index = 60)]
    Raw59([u8; 59]),
    #[codec(index = 61)]
    Raw60([u8; 60]),
    #[codec(index = 62)]
    Raw61([u8; 61]),
    #[codec(index = 63)]
    Raw62([u8; 62]),
    #[codec(index = 64)]
    Raw63([u8; 63]),
    #[codec(index = 65)]
    Raw64([u8; 64]),
    #[codec(index = 66)]
    Raw65([u8; 65]),
    #[codec(index = 67)]
    Raw66([u8; 66]),
    #[codec(index = 68)]
    Raw67([u8; 67]),
    #[codec(index = 69)]
    Raw68([u8; 68]),
    #[codec(index = 70)]
    Raw69([u8; 69]),
    #[codec(index = 71)]
    Raw70([u8; 70]),
    #[codec(index = 72)]
    Raw71([u8; 71]),
    #[codec(index = 73)]
    Raw72([u8; 72]),
    #[codec(index = 74)]
    Raw73([u8; 73]),
    #[codec(index = 75)]
    Raw74([u8; 74]),
    #[codec(index = 76)]
    Raw75([u8; 75]),
    #[codec(index = 77)]
    Raw76([u8; 76]),
    #[codec(index = 78)]
    Raw77([u8; 77]),
    #[codec(index = 79)]
    Raw78([u8; 78]),
    #[codec(index = 80)]
    Raw79([u8; 79]),
    #[codec(index = 81)]
    Raw80([u8; 80]),
    #[codec(index = 82)]
    Raw81([u8; 81]),
    #[codec(index = 83)]
    Raw82([u8; 82]),
    #[codec(index = 84)]
    Raw83([u8; 83]),
    #[codec(index = 85)]
    Raw84([u8; 84]),
    #[codec(index = 86)]
    Raw85([u8; 85]),
    #[codec(index = 87)]
    Raw86([u8; 86]),
    #[codec(index = 88)]
    Raw87([u8; 87]),
    #[codec(index = 89)]
    Raw88([u8; 88]),
    #[codec(index = 90)]
    Raw89([u8; 89]),
    #[codec(index = 91)]
    Raw90([u8; 90]),
    #[codec(index = 92)]
    Raw91([u8; 91]),
    #[codec(index = 93)]
    Raw92([u8; 92]),
    #[codec(index = 94)]
    Raw93([u8; 93]),
    #[codec(index = 95)]
    Raw94([u8; 94]),
    #[codec(index = 96)]
    Raw95([u8; 95]),
    #[codec(index = 97)]
    Raw96([u8; 96]),
    #[codec(index = 98)]
    Raw97([u8; 97]),
    #[codec(index = 99)]
    Raw98([u8; 98]),
    #[codec(index = 100)]
    Raw99([u8; 99]),
    #[codec(index = 101)]
    Raw100([u8; 100]),
    #[codec(index = 102)]
    Raw101([u8; 101]),
    #[codec(index = 103)]
    Raw102([u8; 102]),
    #[codec(index = 104)]
    Raw103([u8; 103]),
    #[codec(index = 105)]
    Raw104([u8; 104]),
    #[codec(index = 106)]
    Raw105([u8; 105]),
    #[codec(index = 107)]
    Raw106([u8; 106]),
    #[codec(index = 108)]
    Raw107([u8; 107]),
    #[codec(index = 109)]
    Raw108([u8; 108]),
    #[codec(index = 110)]
    Raw109([u8; 109]),
    #[codec(index = 111)]
    Raw110([u8; 110]),
    #[codec(index = 112)]
    Raw111([u8; 111]),
    #[codec(index = 113)]
    Raw112([u8; 112]),
    #[codec(index = 114)]
    Raw113([u8; 113]),
    #[codec(index = 115)]
    Raw114([u8; 114]),
    #[codec(index = 116)]
    Raw115([u8; 115]),
    #[codec(index = 117)]
    Raw116([u8; 116]),
    #[codec(index = 118)]
    Raw117([u8; 117]),
    #[codec(index = 119)]
    Raw118([u8; 118]),
    #[codec(index = 120)]
    Raw119([u8; 119]),
    #[codec(index = 121)]
    Raw120([u8; 120]),
    #[codec(index = 122)]
    Raw121([u8; 121]),
    #[codec(index = 123)]
    Raw122([u8; 122]),
    #[codec(index = 124)]
    Raw123([u8; 123]),
    #[codec(index = 125)]
    Raw124([u8; 124]),
    #[codec(index = 126)]
    Raw125([u8; 125]),
    #[codec(index = 127)]
    Raw126([u8; 126]),
    #[codec(index = 128)]
    Raw127([u8; 127]),
    #[codec(index = 129)]
    Raw128([u8; 128]),
    #[codec(index = 130)]
    BlakeTwo256([u8; 32]),
    #[codec(index = 131)]
    Sha256([u8; 32]),
    #[codec(index = 132)]
    Keccak256([u8; 32]),
    #[codec(index = 133)]
    ShaThree256([u8; 32]),
    #[codec(index = 134)]
    TimelockEncrypted {
        encrypted: Vec<u8>,
        reveal_round: u64,
    },
    #[codec(index = 135)]
    ResetBondsFlag,
    #[codec(index = 136)]
    BigRaw(Vec<u8>),
}

#[derive(TypeInfo)]
struct CommitmentInfo {
    fields: BoundedVec<Data>,
}

#[derive(TypeInfo)]
struct Registration {
    deposit: u64,
    block: u32,
    info: CommitmentInfo,
}

#[derive(TypeInfo)]
enum RuntimeCall {}
#[derive(TypeInfo)]
enum RuntimeEvent {}
#[derive(TypeInfo)]
enum RuntimeError {}
#[derive(TypeInfo)]
struct Runtime;

fn entry(
    name: &'static str,
    modifier: StorageEntryModifier,
    ty: StorageEntryType,
    default: Vec<u8>,
) -> StorageEntryMetadata {
    StorageEntryMetadata {
        name,
        modifier,
        ty,
        default,
        docs: vec![],
    }
}

fn pallet(name: &'static str, index: u8, entries: Vec<StorageEntryMetadata>) -> PalletMetadata {
    PalletMetadata {
        name,
        storage: Some(PalletStorageMetadata {
            prefix: name,
            entries,
        }),
        calls: None,
        event: None,
        constants: vec![],
        error: None,
        index,
        docs: vec![],
    }
}

/// SCALE bytes of the synthetic metadata (`meta` prefix included).
pub fn synthetic_metadata() -> Vec<u8> {
    let subtensor = pallet(
        "SubtensorModule",
        7,
        vec![
            entry(
                "SubnetworkN",
                StorageEntryModifier::Default,
                StorageEntryType::Map {
                    hashers: vec![StorageHasher::Identity],
                    key: meta_type::<u16>(),
                    value: meta_type::<u16>(),
                },
                0u16.encode(),
            ),
            entry(
                "Keys",
                StorageEntryModifier::Default,
                StorageEntryType::Map {
                    hashers: vec![StorageHasher::Identity, StorageHasher::Identity],
                    key: meta_type::<(u16, u16)>(),
                    value: meta_type::<AccountId32>(),
                },
                [0u8; 32].to_vec(),
            ),
        ],
    );
    let commitments = pallet(
        "Commitments",
        18,
        vec![entry(
            "CommitmentOf",
            StorageEntryModifier::Optional,
            StorageEntryType::Map {
                hashers: vec![StorageHasher::Identity, StorageHasher::Twox64Concat],
                key: meta_type::<(u16, AccountId32)>(),
                value: meta_type::<Registration>(),
            },
            vec![0],
        )],
    );
    let extrinsic = ExtrinsicMetadata {
        version: 4,
        address_ty: meta_type::<()>(),
        call_ty: meta_type::<RuntimeCall>(),
        signature_ty: meta_type::<()>(),
        extra_ty: meta_type::<()>(),
        signed_extensions: vec![],
    };
    let outer = OuterEnums {
        call_enum_ty: meta_type::<RuntimeCall>(),
        event_enum_ty: meta_type::<RuntimeEvent>(),
        error_enum_ty: meta_type::<RuntimeError>(),
    };
    let v15 = RuntimeMetadataV15::new(
        vec![subtensor, commitments],
        extrinsic,
        meta_type::<Runtime>(),
        vec![],
        outer,
        CustomMetadata {
            map: BTreeMap::new(),
        },
    );
    RuntimeMetadataPrefixed::from(v15).encode()
}

/// A registration value with the given first `Data` field encoded by hand (docs/scheduler.md §4.1).
pub fn registration(block: u32, first_field: Option<Vec<u8>>) -> Vec<u8> {
    let mut v = 1000u64.to_le_bytes().to_vec();
    v.extend(block.to_le_bytes());
    match first_field {
        Some(data) => {
            v.extend(Compact(1u32).encode());
            v.extend(data);
        }
        None => v.extend(Compact(0u32).encode()),
    }
    v
}

/// `Data::Raw(bytes)`: tag = length + 1, then the bytes, no length prefix.
pub fn raw_data(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![bytes.len() as u8 + 1];
    v.extend_from_slice(bytes);
    v
}

/// The chain state and the RPC answers.
#[derive(Clone)]
pub struct FakeChain {
    storage: BTreeMap<Vec<u8>, Vec<u8>>,
    metadata: Vec<u8>,
    block: u32,
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

impl FakeChain {
    /// An empty chain at `block` with the synthetic metadata.
    pub fn new(block: u32) -> Self {
        Self {
            storage: BTreeMap::new(),
            metadata: synthetic_metadata(),
            block,
        }
    }

    /// Serves other metadata (the drift check).
    pub fn with_metadata(mut self, metadata: Vec<u8>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets `SubtensorModule.SubnetworkN(netuid)`.
    pub fn subnetwork_n(&mut self, netuid: u16, n: u16) {
        let mut k = [twox_128(b"SubtensorModule"), twox_128(b"SubnetworkN")].concat();
        k.extend(netuid.to_le_bytes());
        self.storage.insert(k, n.encode());
    }

    /// Sets `SubtensorModule.Keys(netuid, uid)`.
    pub fn key(&mut self, netuid: u16, uid: u16, account: [u8; 32]) {
        let mut k = [twox_128(b"SubtensorModule"), twox_128(b"Keys")].concat();
        k.extend(netuid.to_le_bytes());
        k.extend(uid.to_le_bytes());
        self.storage.insert(k, account.to_vec());
    }

    /// Sets `Commitments.CommitmentOf(netuid, account)` to raw registration bytes.
    pub fn commitment(&mut self, netuid: u16, account: [u8; 32], value: Vec<u8>) {
        let mut k = [twox_128(b"Commitments"), twox_128(b"CommitmentOf")].concat();
        k.extend(netuid.to_le_bytes());
        k.extend(twox_64(&account));
        k.extend(account);
        self.storage.insert(k, value);
    }

    fn hash(&self) -> String {
        hex0x(&[7u8; 32])
    }

    fn state_call(&self, method: &str) -> Result<Vec<u8>, String> {
        Ok(match method {
            "Core_version" => {
                let mut v = "node-subtensor".to_string().encode();
                v.extend("node-subtensor".to_string().encode());
                v.extend(1u32.encode());
                v.extend(393u32.encode());
                v.extend(1u32.encode());
                v.extend(Vec::<([u8; 8], u32)>::new().encode());
                v.extend(1u32.encode());
                v.extend(1u8.encode());
                v
            }
            "Metadata_metadata_versions" => vec![14u32, 15].encode(),
            "Metadata_metadata_at_version" => Some(self.metadata.clone()).encode(),
            "Metadata_metadata" => self.metadata.clone().encode(),
            other => return Err(format!("unexpected state_call {other}")),
        })
    }

    /// Answers one RPC call.
    pub fn handle(&self, method: &str, params: &Value) -> Result<Value, String> {
        let p = |i: usize| params.get(i).cloned().unwrap_or(Value::Null);
        Ok(match method {
            "chain_getBlockHash" => json!(hex0x(&[1u8; 32])),
            "chain_getFinalizedHead" => json!(self.hash()),
            "chain_getHeader" => json!({
                "parentHash": hex0x(&[6u8; 32]), "number": format!("0x{:x}", self.block),
                "stateRoot": hex0x(&[0u8; 32]), "extrinsicsRoot": hex0x(&[0u8; 32]), "digest": {"logs": []}
            }),
            "state_call" => json!(hex0x(&self.state_call(p(0).as_str().unwrap_or_default())?)),
            "state_getStorage" => match self.storage.get(&unhex(p(0).as_str().unwrap())) {
                Some(v) => json!(hex0x(v)),
                None => Value::Null,
            },
            "state_getKeysPaged" => {
                let prefix = unhex(p(0).as_str().unwrap_or("0x"));
                let count = p(1).as_u64().unwrap_or(64) as usize;
                let start = p(2).as_str().map(unhex);
                let keys: Vec<String> = self
                    .storage
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && start.as_ref().is_none_or(|s| *k > s))
                    .take(count)
                    .map(|k| hex0x(k))
                    .collect();
                json!(keys)
            }
            "state_queryStorageAt" => {
                let changes: Vec<Value> = p(0)
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| {
                        let key = k.as_str().unwrap();
                        json!([key, self.storage.get(&unhex(key)).map(|v| hex0x(v))])
                    })
                    .collect();
                json!([{"block": self.hash(), "changes": changes}])
            }
            other => return Err(format!("unexpected RPC method {other}")),
        })
    }

    /// An in-process RPC client answering from this chain.
    pub fn rpc_client(&self) -> subxt_rpcs::RpcClient {
        let chain = Arc::new(self.clone());
        let mock = subxt_rpcs::client::MockRpcClient::builder()
            .method_fallback(
                move |method: String, params: Option<Box<serde_json::value::RawValue>>| {
                    let chain = chain.clone();
                    async move {
                        let params: Value =
                            params.map_or(Value::Null, |p| serde_json::from_str(p.get()).unwrap());
                        chain
                            .handle(&method, &params)
                            .unwrap_or_else(|e| panic!("fake chain: {e}"))
                    }
                },
            )
            .build();
        subxt_rpcs::RpcClient::new(mock)
    }

    /// Serves this chain over WebSocket on a loopback port; returns the URL and the server handle.
    pub async fn serve_ws(&self) -> (String, jsonrpsee::server::ServerHandle) {
        let server = jsonrpsee::server::Server::builder()
            .build("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let mut module = jsonrpsee::RpcModule::new(Arc::new(self.clone()));
        for method in [
            "chain_getBlockHash",
            "chain_getFinalizedHead",
            "chain_getHeader",
            "state_call",
            "state_getStorage",
            "state_getKeysPaged",
            "state_queryStorageAt",
        ] {
            module
                .register_method(method, move |params, chain, _| {
                    let params: Value = params.parse().unwrap_or(Value::Null);
                    chain.handle(method, &params).map_err(|e| {
                        jsonrpsee::types::ErrorObjectOwned::owned(-32000, e, None::<()>)
                    })
                })
                .unwrap();
        }
        (format!("ws://{addr}"), server.start(module))
    }
}
