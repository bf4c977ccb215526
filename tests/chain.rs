//! Reading the registry from a chain (docs/scheduler.md §4.1, §9): subxt over the legacy backend
//! against a fake subtensor — in-process through a mock RPC client, and over a loopback WebSocket
//! for the binary.

mod common;
#[path = "common/fake_chain.rs"]
mod fake_chain;

use std::time::{Duration, Instant};

use common::{fresh_database, http, ApiProcess};
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use fake_chain::{raw_data, registration, FakeChain};
use kinitro::chain::client::{client_from_rpc, ChainSource};
use subxt::utils::AccountId32;

const NETUID: u16 = 2;
const UUID: &str = "95edf2b6-e18b-400a-8398-5573df10e5e4";

fn account(i: u8) -> [u8; 32] {
    [i; 32]
}

/// 70 uids on netuid 2 (more than one 64-key page), with every commitment shape of
/// docs/scheduler.md §9.3.
fn scenario() -> FakeChain {
    let mut c = FakeChain::new(4242);
    for uid in 0..70u16 {
        c.key(NETUID, uid, account(uid as u8 + 1));
    }
    c.subnetwork_n(NETUID, 70);
    c.commitment(
        NETUID,
        account(1),
        registration(
            1000,
            Some(raw_data(format!("user/policy:abc123de:{UUID}").as_bytes())),
        ),
    );
    let enc = "user/secret:abc123de:e:HGp!~HduhsuIe(H-;p6WI8p5(qK-Rt>1EK;%@$%*k~V~h;;rWk94{9o(eaud^s%Z@F`z+Nq;6@CsMMP+";
    c.commitment(
        NETUID,
        account(2),
        registration(1100, Some(raw_data(enc.as_bytes()))),
    );
    c.commitment(
        NETUID,
        account(3),
        registration(1200, Some(raw_data(br#"{"t":"pk","k":"0011"}"#))),
    );
    c.commitment(
        NETUID,
        account(4),
        registration(1300, Some(raw_data(&[b'x'; 128]))),
    );
    c.commitment(NETUID, account(5), registration(1400, Some(vec![135]))); // ResetBondsFlag
    c.commitment(
        NETUID,
        account(6),
        registration(1500, Some(raw_data(&[b'o', 0xff, b'k']))),
    );
    c.commitment(
        NETUID,
        account(200),
        registration(1600, Some(raw_data(b"stale:entry:x"))),
    ); // deregistered
    c.key(3, 0, account(250)); // another subnet
    c.commitment(
        3,
        account(250),
        registration(1700, Some(raw_data(b"other:net:x"))),
    );
    c
}

fn ss58(i: u8) -> String {
    AccountId32(account(i)).to_string()
}

async fn source(chain: &FakeChain) -> ChainSource {
    let client = client_from_rpc(chain.rpc_client()).await.unwrap();
    ChainSource::with_client(client, NETUID, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_reads_every_uid_and_commitment_at_the_finalized_block() {
    let chain = scenario();
    let mut src = source(&chain).await;
    assert_eq!(src.finalized_block().await.unwrap(), 4242);
    let snap = src.snapshot().await.unwrap();
    assert_eq!(snap.block, 4242);
    assert_eq!(snap.subnetwork_n, 70);
    assert_eq!(snap.entries.len(), 70, "pagination over 64-key pages");
    let uids: Vec<u16> = snap.entries.iter().map(|e| e.uid).collect();
    assert_eq!(uids, (0..70).collect::<Vec<_>>());
    let e = &snap.entries;
    assert_eq!(e[0].hotkey, ss58(1));
    assert!(e[0].hotkey.starts_with('5'), "SS58 with prefix 42");
    assert_eq!(
        (e[0].commitment.as_deref(), e[0].commit_block),
        (Some(&*format!("user/policy:abc123de:{UUID}")), Some(1000))
    );
    assert!(e[1].commitment.as_deref().unwrap().contains(":e:"));
    assert_eq!(e[2].commitment.as_deref(), Some(r#"{"t":"pk","k":"0011"}"#));
    assert_eq!(e[3].commitment.as_ref().unwrap().len(), 128);
    assert_eq!(
        (e[4].commitment.as_deref(), e[4].commit_block),
        (None, Some(1400)),
        "a non-Raw first field is no commitment"
    );
    assert_eq!(
        e[5].commitment.as_deref(),
        Some("ok"),
        "invalid UTF-8 dropped"
    );
    assert_eq!(
        (e[6].commitment.as_deref(), e[6].commit_block),
        (None, None)
    );
    assert!(e
        .iter()
        .all(|x| x.commitment.as_deref() != Some("stale:entry:x")
            && x.commitment.as_deref() != Some("other:net:x")));

    // A missing SubnetworkN reads as its default, 0 (a warning, not an error).
    let mut bare = FakeChain::new(7);
    bare.key(NETUID, 0, account(9));
    let snap = source(&bare).await.snapshot().await.unwrap();
    assert_eq!((snap.subnetwork_n, snap.entries.len()), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_check_against_real_finney_metadata() {
    // Metadata of finney runtime spec 393, kept in the repository so the check always runs.
    let metadata = include_bytes!("fixtures/chain/finney-spec393.scale").to_vec();
    let chain = scenario().with_metadata(metadata);
    let snap = source(&chain).await.snapshot().await.unwrap();
    assert_eq!(snap.entries.len(), 70);
    assert_eq!(
        snap.entries[0].commitment.as_deref(),
        Some(&*format!("user/policy:abc123de:{UUID}"))
    );
    assert_eq!(
        snap.entries[3].commitment.as_ref().map(String::len),
        Some(128)
    );
    assert_eq!(snap.entries[4].commitment, None);
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_binary_reads_a_websocket_node() {
    let (url_ws, _server) = scenario().serve_ws().await;
    let url = fresh_database().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "scheduler",
            "--database-url",
            url.as_str(),
            "--network",
            &url_ws,
            "--netuid",
            "2",
            "--episodes-per-env",
            "1",
        ])
        .args(["--env-ids", "metaworld/reach-v3"])
        .env("KINITRO_SCHEDULER_HEARTBEAT_INTERVAL_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows: Vec<Row> = loop {
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT count(*) AS n, status, status_reason AS reason FROM miners GROUP BY status, status_reason ORDER BY status, status_reason",
        )
        .load(&mut conn)
        .await
        .unwrap();
        if !rows.is_empty() {
            break rows;
        }
        assert!(Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let want = vec![
        Row {
            n: 1,
            status: "active".into(),
            reason: None,
        },
        Row {
            n: 62,
            status: "inactive".into(),
            reason: Some("no commitment".into()),
        },
        Row {
            n: 1,
            status: "inactive".into(),
            reason: Some("encrypted commitment but no backend private key configured".into()),
        },
        Row {
            n: 1,
            status: "invalid_commitment".into(),
            reason: Some("malformed commitment: expected <repo>:<revision>:<deployment>".into()),
        },
        Row {
            n: 1,
            status: "invalid_commitment".into(),
            reason: Some("operator public-key commitment".into()),
        },
    ];
    let mut got = rows;
    got.sort_by(|a, b| {
        (a.status.clone(), a.reason.clone()).cmp(&(b.status.clone(), b.reason.clone()))
    });
    let mut want = want;
    want.sort_by(|a, b| {
        (a.status.clone(), a.reason.clone()).cmp(&(b.status.clone(), b.reason.clone()))
    });
    // 70 uids: 1 active, 2 invalid (JSON key, 128 x's), 1 encrypted, the ResetBondsFlag, "ok", and the rest without commitment.
    assert_eq!(got.iter().map(|r| r.n).sum::<i64>(), 70, "{got:?}");
    assert!(got.contains(&want[0]) && got.contains(&want[4]), "{got:?}");
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = BigInt)]
        block_number: i64,
        #[diesel(sql_type = Text)]
        registry_source: String,
    }
    let c: C = diesel::sql_query("SELECT block_number, registry_source FROM evaluation_cycles")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (c.block_number, c.registry_source.as_str()),
        (4242, "chain")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_outage_is_reported_not_fatal() {
    let url = fresh_database().await;
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "scheduler",
            "--database-url",
            url.as_str(),
            "--network",
            &format!("ws://127.0.0.1:{port}"),
            "--netuid",
            "2",
        ])
        .env("KINITRO_SCHEDULER_HEARTBEAT_INTERVAL_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = ApiProcess::start(&url, &[("KINITRO_API_AUTH_DISABLED", "1")]);
    #[derive(QueryableByName)]
    struct H {
        #[diesel(sql_type = Bool)]
        chain_ok: bool,
        #[diesel(sql_type = Nullable<Text>)]
        chain_error: Option<String>,
    }
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let h = loop {
        let h: Option<H> = diesel::sql_query("SELECT chain_ok, chain_error FROM scheduler_state")
            .get_result(&mut conn)
            .await
            .ok();
        if let Some(h) = h {
            break h;
        }
        assert!(Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!h.chain_ok);
    assert!(h.chain_error.unwrap().contains(&port.to_string()));
    assert_eq!(
        http(api.port, "GET", "/v1/status", &[], None).json()["status"],
        "degraded"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a chain outage is not fatal"
    );
    let _ = child.kill();
    let _ = child.wait();
    let o = common::kinitro(&["scheduler", "--network", "mainnet"], &[]);
    assert_eq!(
        common::stderr(&o).trim(),
        "error: unknown network 'mainnet': use finney, test, archive, local or a ws(s):// URL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_public_key_reads_the_operator_commitment() {
    let key = "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f";
    let mut chain = scenario();
    chain.commitment(
        NETUID,
        account(60),
        registration(
            1,
            Some(raw_data(format!(r#"{{"t":"pk","k":"{key}"}}"#).as_bytes())),
        ),
    );
    chain.commitment(
        NETUID,
        account(61),
        registration(
            1,
            Some(raw_data(br#"{"type":"backend_pubkey","key":"abcd"}"#)),
        ),
    );
    let (url, _server) = chain.serve_ws().await;
    let run = |hotkey: String| {
        let url = url.clone();
        std::thread::spawn(move || {
            common::kinitro(
                &[
                    "crypto",
                    "fetch-public-key",
                    "-b",
                    &hotkey,
                    "--network",
                    &url,
                    "--netuid",
                    "2",
                ],
                &[],
            )
        })
        .join()
        .unwrap()
    };
    let o = run(ss58(60));
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o).trim(), key);
    let o = run(ss58(61));
    assert_eq!(
        common::stderr(&o).trim(),
        "error: invalid backend public key"
    );
    let o = run(ss58(1));
    assert_eq!(
        common::stderr(&o).trim(),
        format!("error: no backend public key committed by {}", ss58(1))
    );
}
